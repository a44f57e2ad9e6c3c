# The official dataloaders.py needs torchvision.transforms; cvlm's adapter never imports this module.
from torchvision import transforms  # noqa: F401
