"""Building blocks of the Split-VAE network (Asperti, Bugo & Filippini 2022, §3.1; the book's eq-resblock), shared
by every model in vaelab.

The blocks follow `split_vae.py` of Asperti, Bugo & Filippini, itself derived from the ResNet of Dai & Wipf's
Two-Stage VAE: pre-activation residual blocks whose shortcut is always a learned projection, never the identity.
"""
import torch.nn.functional as F
from torch import Tensor, nn

# Keras BatchNormalization(momentum=.999, epsilon=1e-5) keeps 99.9% of the running statistics at each step;
# PyTorch's momentum is the weight of the *new* value, hence 0.001. Its time constant is 1,000 steps: right for
# the paper's 150,000 steps, far too slow for a run of a few hundred, which would evaluate with barely-updated
# statistics. So it is a parameter, and VAEConfig.bn_momentum chooses it.
PAPER_BN_MOMENTUM = 0.001
BN_EPS = 1e-5


class ResBlock(nn.Module):
    """y = conv(swish(bn(conv(swish(bn(x)))))) + conv(x): two pre-activation steps and a 3x3 conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int, depth: int = 2, kernel_size: int = 3,
                 bn_momentum: float = PAPER_BN_MOMENTUM):
        super().__init__()
        layers, channels = [], in_channels
        for _ in range(depth):
            layers += [
                nn.BatchNorm2d(channels, momentum=bn_momentum, eps=BN_EPS),
                nn.SiLU(),  # swish
                nn.Conv2d(channels, out_channels, kernel_size, padding="same"),
            ]
            channels = out_channels
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Conv2d(in_channels, out_channels, kernel_size, padding="same")

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.shortcut(x)


class ResFcBlock(nn.Module):
    """The dense twin of ResBlock: two [BN -> swish -> Linear] steps plus a Linear shortcut."""

    def __init__(self, in_features: int, out_features: int, depth: int = 2, bn_momentum: float = PAPER_BN_MOMENTUM):
        super().__init__()
        layers, features = [], in_features
        for _ in range(depth):
            layers += [
                nn.BatchNorm1d(features, momentum=bn_momentum, eps=BN_EPS),
                nn.SiLU(),
                nn.Linear(features, out_features),
            ]
            features = out_features
        self.body = nn.Sequential(*layers)
        self.shortcut = nn.Linear(in_features, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.shortcut(x)


def scale_block(in_channels: int, out_channels: int, blocks: int = 1, depth: int = 2,
                bn_momentum: float = PAPER_BN_MOMENTUM) -> nn.Sequential:
    """`blocks` ResBlocks at one resolution (the paper uses one block per scale)."""
    return nn.Sequential(*[ResBlock(in_channels if i == 0 else out_channels, out_channels, depth, bn_momentum=bn_momentum)
                           for i in range(blocks)])


class KerasSameConv2d(nn.Conv2d):
    """Conv2D(padding='same') as TensorFlow pads it: when the total padding is odd (stride 2 on an even size),
    the extra row and column go at the bottom and right. PyTorch's padding=1 pads both sides, which shifts the
    sampling grid by one pixel: output i would look at inputs 2i-1..2i+1 instead of TensorFlow's 2i..2i+2."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 2):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first: (left, right, top, bottom)
            out = -(-size // self.stride[0])  # ceil(size / stride)
            total = max((out - 1) * self.stride[0] + self.kernel_size[0] - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class KerasSameConvTranspose2d(nn.ConvTranspose2d):
    """Conv2DTranspose(padding='same'): the adjoint of KerasSameConv2d, output size = stride * input size. The
    full transposed convolution is cropped at the start by TensorFlow's top/left padding (0 for kernel 3, stride
    2) and the rest at the end; PyTorch's padding=1, output_padding=1 would crop one at each end instead."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 2):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        full = super().forward(x)
        total = max(self.kernel_size[0] - self.stride[0], 0)
        start = total // 2
        height, width = x.shape[-2] * self.stride[0], x.shape[-1] * self.stride[0]
        return full[..., start:start + height, start:start + width]


def upsample(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """Keras Conv2DTranspose(3x3, stride 2, 'same'): doubles height and width exactly, on TensorFlow's grid."""
    return KerasSameConvTranspose2d(in_channels, out_channels)


def downsample(in_channels: int, out_channels: int) -> nn.Conv2d:
    """Keras Conv2D(3x3, stride 2, 'same'), no activation after it (the next ResBlock is pre-activation)."""
    return KerasSameConv2d(in_channels, out_channels)
