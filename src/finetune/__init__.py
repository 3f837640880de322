"""finetune: fine-tune an ImageNet-pretrained ResNet18 with Lightning + Hydra, evaluate it class
by class, look inside it, and prove its saved results reproduce."""

__version__ = "0.1.0"
