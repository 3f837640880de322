"""Benchmarks of the finetune package: `make bench` = `python benchmarks/run_all.py`."""
