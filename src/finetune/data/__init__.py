"""The data layer: the data kinds (kinds.py, one registry; folder.py, demo.py, cifar10.py), the
data-source layer every reader goes through (sources.py: listings, dropping unreadable files,
seeded samples; loaders.py: the one DataLoader), the DataModule (datamodule.py) and what
mode=analyze reads (samples.py, imagenet_val.py)."""
