"""The self-supervised VAE's building blocks (Gatopoulos & Tomczak 2020, §4.1 and Appendix A.3):
weight-normalised convolutions with data-dependent initialisation, DenseNet layers closed by channel attention,
ELU activations, strided convolutions to go down and transposed convolutions to go up.

    DenseNetLayer(C, g, steps)     [x -> cat(x, conv3x3(elu(conv1x1(x)))) -> elu] x steps -> channel attention
                                   C -> C + g * steps channels, same resolution
    DenselyEncoder(.., sf)         [DenseNetLayer -> stride-2 conv (channels x2), g x2] x sf -> DenseNetLayer -> 1x1
    DenselyDecoder(.., sf)         [DenseNetLayer -> transposed conv (channels /2), g /2] x sf -> 3x3
    DenselyNetwork(.., blocks)     DenseNetLayer x blocks -> 1x1, same resolution

Weight normalisation (Salimans & Kingma 2016) writes each output filter as w = g v / ||v||. Its data-dependent
initialisation runs one batch through the network and sets g and the bias so that every channel of every layer
starts with mean 0 and standard deviation `init_scale` on that batch. Inside `data_dependent_init(model)` each
layer does that on the first input it sees; `SelfSupervisedVAE.initialize(x)` uses it, and `vaelab.fit` calls
that once on the first batch of a fresh run.

Two choices differ from the srVAE code, which has no nonlinearity between the 1x1 and 3x3 convolutions of a dense
block nor between the two convolutions of the channel attention (two linear maps in a row): we put an ELU in both
places, following the paper's "ELUs are used everywhere" and the DenseNet-BC and RCAN designs it cites.
"""
import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INIT_SCALE = 0.01  # srVAE's data-dependent init: every channel starts with standard deviation 0.01
ATTENTION_REDUCTION = 8  # RCAN's channel-attention bottleneck, C -> C/8 -> C


class WeightNormConv(nn.Module):
    """A convolution with weight w = g * v / ||v||, the norm taken over everything but the output channel."""

    transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 output_padding: int = 0):
        super().__init__()
        shape = (in_channels, out_channels) if self.transposed else (out_channels, in_channels)
        self.direction = nn.Parameter(torch.randn(*shape, kernel_size, kernel_size) * 0.05)  # v, as srVAE inits it
        self.gain = nn.Parameter(torch.ones(out_channels))  # g
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.init_pending = False  # set by data_dependent_init

    def weight(self) -> Tensor:
        out_dim = 1 if self.transposed else 0
        other = [d for d in range(4) if d != out_dim]
        norm = torch.linalg.vector_norm(self.direction, dim=other, keepdim=True)
        gain = self.gain.view([-1 if d == out_dim else 1 for d in range(4)])
        return gain * self.direction / norm

    def conv(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight(), self.bias, self.stride, self.padding)

    def forward(self, x: Tensor) -> Tensor:
        if self.init_pending:
            self.initialize_from(x)
        return self.conv(x)

    @torch.no_grad()
    def initialize_from(self, x: Tensor, init_scale: float = INIT_SCALE, eps: float = 1e-8) -> None:
        """g <- init_scale / std, b <- -mean * init_scale / std of this layer's outputs on x, per channel."""
        self.init_pending = False
        self.gain.fill_(1.0)
        self.bias.zero_()
        out = self.conv(x).transpose(0, 1).flatten(1)  # channels x (batch * pixels)
        scale = init_scale / torch.sqrt(out.var(1) + eps)
        self.gain.mul_(scale)
        self.bias.copy_(-out.mean(1) * scale)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"


class WeightNormConvTranspose(WeightNormConv):
    """The transposed twin: 3x3, stride 2, padding 1, output padding 1 exactly doubles height and width."""

    transposed = True

    def conv(self, x: Tensor) -> Tensor:
        return F.conv_transpose2d(x, self.weight(), self.bias, self.stride, self.padding, self.output_padding)


@contextmanager
def data_dependent_init(model: nn.Module):
    """Inside this block, every weight-normalised layer initialises itself from the first input it sees."""
    layers = [m for m in model.modules() if isinstance(m, WeightNormConv)]
    for layer in layers:
        layer.init_pending = True
    try:
        yield
    finally:
        for layer in layers:
            layer.init_pending = False


class ChannelAttention(nn.Module):
    """RCAN's CA: x * sigmoid(conv1x1(elu(conv1x1(global average pool of x)))), one gate per channel."""

    def __init__(self, channels: int, reduction: int = ATTENTION_REDUCTION):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.squeeze = WeightNormConv(channels, hidden, 1)
        self.excite = WeightNormConv(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        summary = x.mean(dim=(2, 3), keepdim=True)  # global average pooling: one number per channel
        return x * torch.sigmoid(self.excite(F.elu(self.squeeze(summary))))


class DenseBlock(nn.Module):
    """DenseNet-BC's step: a 1x1 bottleneck to 4g channels, a 3x3 conv to g, concatenated to the input."""

    def __init__(self, in_channels: int, growth: int):
        super().__init__()
        self.bottleneck = WeightNormConv(in_channels, 4 * growth, 1)
        self.conv = WeightNormConv(4 * growth, growth, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.conv(F.elu(self.bottleneck(x)))], dim=1)


class DenseNetLayer(nn.Module):
    """`steps` dense blocks, each followed by an ELU, then channel attention: C -> C + growth * steps channels."""

    def __init__(self, in_channels: int, growth: int, steps: int):
        super().__init__()
        self.blocks = nn.ModuleList(DenseBlock(in_channels + i * growth, growth) for i in range(steps))
        self.out_channels = in_channels + growth * steps
        self.attention = ChannelAttention(self.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = F.elu(block(x))
        return self.attention(x)


def downsample(channels: int) -> WeightNormConv:
    """A strided 3x3 conv: half the resolution (28 -> 14 -> 7), twice the channels, no activation."""
    return WeightNormConv(channels, 2 * channels, 3, stride=2, padding=1)


def upsample(channels: int) -> WeightNormConvTranspose:
    """A transposed 3x3 conv: twice the resolution (7 -> 14 -> 28), half the channels."""
    return WeightNormConvTranspose(channels, channels // 2, 3, stride=2, padding=1, output_padding=1)


class DenselyEncoder(nn.Sequential):
    """Down `scale_factor` times (the growth rate doubling each time), then a DenseNetLayer and a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, growth: int, steps: int, scale_factor: int):
        layers, channels = [], in_channels
        for _ in range(scale_factor):
            layers.append(DenseNetLayer(channels, growth, steps))
            channels = layers[-1].out_channels
            layers.append(downsample(channels))
            channels, growth = 2 * channels, 2 * growth
        layers.append(DenseNetLayer(channels, growth, steps))
        layers.append(WeightNormConv(layers[-1].out_channels, out_channels, 1))
        super().__init__(*layers)


class DenselyDecoder(nn.Sequential):
    """Up `scale_factor` times (the growth rate halving each time), then a 3x3 conv to the output channels."""

    def __init__(self, in_channels: int, out_channels: int, growth: int, steps: int, scale_factor: int):
        layers, channels = [], in_channels
        for _ in range(scale_factor):
            layers.append(DenseNetLayer(channels, growth, steps))
            channels = layers[-1].out_channels
            layers.append(upsample(channels))
            channels, growth = channels // 2, max(growth // 2, 1)
        layers.append(WeightNormConv(channels, out_channels, 3, padding=1))
        super().__init__(*layers)


class DenselyNetwork(nn.Sequential):
    """`blocks` DenseNetLayers at one resolution, then a 1x1 conv to the output channels."""

    def __init__(self, in_channels: int, out_channels: int, growth: int, steps: int, blocks: int):
        layers, channels = [], in_channels
        for _ in range(blocks):
            layers.append(DenseNetLayer(channels, growth, steps))
            channels = layers[-1].out_channels
        layers.append(WeightNormConv(channels, out_channels, 1))
        super().__init__(*layers)


def scale_factor(size: int, target: int) -> int:
    """How many halvings take `size` to `target` (28 -> 7: 2); an error unless size = target * 2^n."""
    n = math.log2(size / target) if size >= target > 0 else -1
    if n != int(n) or n < 0:
        raise ValueError(f"size {size} is not {target} times a power of 2")
    return int(n)
