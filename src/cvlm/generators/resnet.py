"""ResNet-18/34/50/101/152 built without torchvision, with torchvision's module names and order.

R2Gen and R2GenCMN build their visual extractor as ``torchvision.models.resnet101(pretrained=...)`` (by name)
and keep ``list(model.children())[:-2]`` (conv1, bn1, relu, maxpool, layer1..layer4), so a checkpoint stores
``visual_extractor.model.{0,1,4,5,6,7}.*``. Installing torchvision would replace cvlm's CPU torch (its
registry wheels pin a CUDA build, and a wheel built for another torch fails at import with ``operator
torchvision::nms does not exist``). The networks here are ResNet v1.5 (He et al., CVPR 2016, "Deep Residual
Learning for Image Recognition", Table 1, with the stride on the 3x3 convolution of a bottleneck, as
torchvision does), written from the paper and torchvision's documented state-dict names; the weights always
come from the user's checkpoint. :func:`torchvision_stand_in` puts them, for the length of a ``with`` block,
where the official code looks for them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from torch import nn

from cvlm.generators.base import GeneratorError


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (ResNet-18/34); torchvision's ``BasicBlock`` names."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, inplanes, H, W) -> (B, planes, H / stride, W / stride)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, v1.5) -> 1x1 x4 with a shortcut (ResNet-50/101/152); torchvision's names."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, inplanes, H, W) -> (B, 4 * planes, H / stride, W / stride)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """An ImageNet ResNet: stem, four stages, global average pool, 1000-way ``fc``.

    The children come in torchvision's order (``conv1, bn1, relu, maxpool, layer1..layer4, avgpool, fc``),
    so ``nn.Sequential(*list(model.children())[:-2])`` maps a (B, 3, 224, 224) image to the (B, C, 7, 7)
    grid R2Gen attends over (C = 2048 for ResNet-50/101/152, 512 for ResNet-18/34).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: Blocks per stage, e.g. ``(3, 4, 23, 3)`` for ResNet-101.
        num_classes: Outputs of ``fc``.
    """

    def __init__(
        self, block: type[BasicBlock | Bottleneck], layers: tuple[int, ...], num_classes: int = 1000
    ) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._stage(block, 64, layers[0], 1)
        self.layer2 = self._stage(block, 128, layers[1], 2)
        self.layer3 = self._stage(block, 256, layers[2], 2)
        self.layer4 = self._stage(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # He et al. initialisation, as torchvision does
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def _stage(
        self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        stage = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_classes) logits."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


ARCHITECTURES: dict[str, tuple[type[BasicBlock | Bottleneck], tuple[int, ...]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


def build_resnet(name: str, pretrained: bool = False, weights: Any = None, **kwargs: Any) -> ResNet:
    """``torchvision.models.<name>(pretrained=..., weights=...)`` without torchvision, never downloading.

    Args:
        name: A key of :data:`ARCHITECTURES`.
        pretrained: Must be false: the checkpoint brings the weights (``--visual_extractor_pretrained``).
        weights: Must be ``None`` (torchvision's newer spelling of ``pretrained``).
        **kwargs: ``num_classes`` only.

    Raises:
        GeneratorError: For an unknown name, a request for ImageNet weights or another keyword.
    """
    if name not in ARCHITECTURES:
        raise GeneratorError(f"cvlm builds {', '.join(ARCHITECTURES)} without torchvision, not {name!r}.")
    if pretrained or weights is not None:
        raise GeneratorError(
            f"{name}: ImageNet weights would be downloaded. The R2Gen checkpoint holds the visual "
            "extractor's weights: pass visual_extractor_pretrained=False (cvlm's default)."
        )
    unknown = set(kwargs) - {"num_classes", "progress"}
    if unknown:
        raise GeneratorError(f"{name}: cvlm's ResNet takes no {', '.join(sorted(unknown))}.")
    block, layers = ARCHITECTURES[name]
    return ResNet(block, layers, kwargs.get("num_classes", 1000))


def _constructor(name: str) -> Callable[..., ResNet]:
    def construct(pretrained: bool = False, weights: Any = None, **kwargs: Any) -> ResNet:
        return build_resnet(name, pretrained, weights, **kwargs)

    construct.__name__ = name
    return construct


class _Missing(ModuleType):
    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise AttributeError(
            f"{self.__name__}.{attribute} is not provided by cvlm's torchvision stand-in (it has "
            f"models.{', models.'.join(ARCHITECTURES)}). Use resnet=torchvision in an environment where "
            "torchvision imports, or run the generator there and reach it with the command: adapter."
        )


@contextmanager
def torchvision_stand_in() -> Iterator[ModuleType]:
    """Within the block, ``import torchvision.models`` gives cvlm's ResNets; ``sys.modules`` is restored.

    Code imported inside the block keeps its reference to the stand-in, so a model class from an R2Gen
    checkout can be built later as well.

    Example:
        >>> with torchvision_stand_in():
        ...     import torchvision.models as models
        ...     len(list(models.resnet18().children()))
        10
    """
    package, models = _Missing("torchvision"), _Missing("torchvision.models")
    package.__path__ = []  # a package, so that ``import torchvision.models`` looks in sys.modules
    package.models = models  # type: ignore[attr-defined]
    package.__version__ = "cvlm-stand-in"  # type: ignore[attr-defined]
    for name in ARCHITECTURES:
        setattr(models, name, _constructor(name))
    saved = {name: sys.modules.get(name) for name in ("torchvision", "torchvision.models")}
    sys.modules["torchvision"], sys.modules["torchvision.models"] = package, models
    try:
        yield models
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
