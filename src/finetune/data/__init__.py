"""Data sources (scene folders, CIFAR-10 batches, ImageNet-val, the demo) and the DataModule."""
