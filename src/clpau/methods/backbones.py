"""ResNet backbones in plain torch (torchvision cannot be installed beside this torch; see docs/performance.md, LitData's pin).

Module names follow torchvision's, so `resnet18(num_classes=1000)` has exactly its 11,689,512 parameters and a
torchvision state dict would load. `resnet_small` is the CPU default: same design, half the widths, one
block per stage. Both return the pooled feature h (the representation evaluated downstream) when num_classes=0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def max_pool_3x3_s2(x: torch.Tensor) -> torch.Tensor:
    """The stem's max pool (3x3, stride 2, padding 1). On a CPU, in bf16 and where no gradient is wanted (the
    momentum encoder's keys), it is taken as the maximum of strided slices, rows then columns: the same values
    without the int64 index tensor torch's CPU kernel writes whether or not a backward follows, and twice as fast
    as that kernel in bf16 (resnet_small's 128 images of 64 px: 1.43 -> 0.71 ms; in fp32 the kernel is the faster)."""
    if (torch.is_grad_enabled() and x.requires_grad) or x.dtype != torch.bfloat16 or x.device.type != "cpu":
        return F.max_pool2d(x, 3, 2, 1)
    rows_done = _max_3_s2(x.transpose(-1, -2)).transpose(-1, -2)
    return _max_3_s2(rows_done)


def _max_3_s2(x: torch.Tensor) -> torch.Tensor:
    """Along the last dimension: output j is the maximum of elements 2j − 1, 2j and 2j + 1, those that exist."""
    out = x[..., 0::2].clone()  # 2j: as many as there are outputs
    odd = x[..., 1::2]  # 2j + 1, which is also 2(j + 1) − 1; one fewer than the outputs when the size is odd
    n = odd.shape[-1]
    torch.maximum(out[..., :n], odd, out=out[..., :n])
    torch.maximum(out[..., 1:], odd[..., : out.shape[-1] - 1], out=out[..., 1:])
    return out


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), num_classes: int = 0):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(widths[0], layers[0], 1)
        self.layer2 = self._stage(widths[1], layers[1], 2)
        self.layer3 = self._stage(widths[2], layers[2], 2)
        self.layer4 = self._stage(widths[3], layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = widths[3]
        self.fc = nn.Linear(widths[3], num_classes) if num_classes else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # zero-init the last BN of each block: every block starts as the identity
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(self.inplanes, planes, stride)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last: with the weights in that layout too (see `pretrain`), 1.6x faster bf16 training on CPU
        # (measured: 2685 vs 1634 img/s for resnet_small at 64 px), and the layout tensor cores want
        x = x.contiguous(memory_format=torch.channels_last)
        x = max_pool_3x3_s2(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 0) -> ResNet:
    return ResNet((2, 2, 2, 2), (64, 128, 256, 512), num_classes)


def resnet_small(num_classes: int = 0) -> ResNet:
    return ResNet((1, 1, 1, 1), (32, 64, 128, 256), num_classes)


BACKBONES = {"resnet18": resnet18, "resnet_small": resnet_small}


def build_backbone(name: str, num_classes: int = 0) -> ResNet:
    try:
        return BACKBONES[name](num_classes)
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}") from None
