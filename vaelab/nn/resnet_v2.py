"""The blocks of Rivera's "How to train your VAE": pre-activation ResNetV2 blocks and a PatchGAN.

Read from the original Keras code (`reader.py`, `discriminator.py` of marianorivera/How2TrainUrVAE) and rebuilt:

    ConvTriBlockV2     BN -> ReLU -> Conv3x3 -> BN -> ReLU -> Conv3x3 -> BN -> ReLU -> Conv1x1 (stride s)
    ResBlockIdV2       x + ConvTri(x)                                          same size
    ResBlockConvV2     ConvTri(x, s=2) + Conv1x1_s2(ReLU(BN(x)))               halves height and width
    ResBlockConvTV2    ConvT3x3_s2(ReLU(BN(Conv1x1(ReLU(BN(x)))))) + ConvT3x3_s2(ReLU(BN(x)))   doubles them
    PatchGAN           [Conv3x3 (stride s) -> BN -> LeakyReLU -> Dropout] per layer, one logit per patch

"Pre-activation" (He et al.'s ResNet v2): normalisation and nonlinearity come *before* each convolution, so the
identity path of a block carries the sum of every earlier block untouched.

Keras defaults are kept where PyTorch's differ: BatchNormalization(momentum=0.99, epsilon=1e-3) keeps 99% of the
running statistics per step, which is PyTorch's momentum 0.01 (the weight of the *new* value); LeakyReLU's slope is
0.3 (PyTorch's default is 0.01); kernels are glorot-uniform with zero biases (`keras_init`); strided convolutions
pad as TensorFlow's 'same' does (`KerasSameConv2d`, `KerasSameConvTranspose2d`).

Batch normalisation as the original *ran*: its `train_step` calls both networks without `training=True`, so Keras
runs every BatchNormalization in inference mode (the moving mean 0 and variance 1 never move; the layer is a
learned per-channel scale and shift, gamma x / sqrt(1 + eps) + beta) and every Dropout off. `normalisation=
"inference"` (the default) does the same: `keep_inference_mode` holds those layers in eval mode whatever
`.train()` says. `normalisation="batch"` is PyTorch's usual training mode (batch statistics, dropout on). In a
PatchGAN that ends in batch normalisation it cannot learn: the real and the generated batch go through it in
separate calls, each batch's logits are normalised to the same mean, and no weights separate the two on average.
"""
import math

from torch import Tensor, nn

from .resnet import KerasSameConv2d, KerasSameConvTranspose2d

KERAS_BN_MOMENTUM = 0.01  # Keras momentum 0.99 = keep 0.99 of the old statistics = PyTorch momentum 0.01
KERAS_BN_EPS = 1e-3
KERAS_LEAKY_SLOPE = 0.3
PATCHGAN_DROPOUT = 0.25
NORMALISATIONS = ("inference", "batch")


def keep_inference_mode(module: nn.Module, normalisation: str) -> None:
    """After `module.train(...)`: with normalisation="inference", put batch norm and dropout back in eval mode."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    if normalisation == "inference":
        for layer in module.modules():
            if isinstance(layer, (nn.BatchNorm2d, nn.Dropout)):
                layer.eval()


def pre_activation(channels: int, bn_momentum: float) -> list[nn.Module]:
    """BN -> ReLU: what comes before every convolution of a ResNetV2 block."""
    return [nn.BatchNorm2d(channels, momentum=bn_momentum, eps=KERAS_BN_EPS), nn.ReLU()]


def upsample_conv(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """Keras Conv2DTranspose(3x3, stride 2, 'same'): exactly doubles height and width, on TensorFlow's grid."""
    return KerasSameConvTranspose2d(in_channels, out_channels)


class ConvTriBlockV2(nn.Module):
    """Three pre-activated convolutions: 3x3, 3x3, then a 1x1 that carries the block's stride.

    The original takes a stride per conv, but its blocks only ever stride the last (1x1) one; so does this.
    A 1x1 conv with stride 2 keeps every other pixel of its input, like Keras' 'same' padding does.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, bn_momentum: float = KERAS_BN_MOMENTUM):
        super().__init__()
        self.body = nn.Sequential(
            *pre_activation(in_channels, bn_momentum), nn.Conv2d(in_channels, out_channels, 3, padding=1),
            *pre_activation(out_channels, bn_momentum), nn.Conv2d(out_channels, out_channels, 3, padding=1),
            *pre_activation(out_channels, bn_momentum), nn.Conv2d(out_channels, out_channels, 1, stride=stride),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class ResBlockIdV2(nn.Module):
    """y = x + ConvTri(x): the identity block, same channels and size in and out."""

    def __init__(self, channels: int, bn_momentum: float = KERAS_BN_MOMENTUM):
        super().__init__()
        self.residual = ConvTriBlockV2(channels, channels, bn_momentum=bn_momentum)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.residual(x)


class ResBlockConvV2(nn.Module):
    """y = ConvTri(x, stride 2) + Conv1x1_s2(ReLU(BN(x))): the strided block, halves height and width."""

    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float = KERAS_BN_MOMENTUM):
        super().__init__()
        self.residual = ConvTriBlockV2(in_channels, out_channels, stride=2, bn_momentum=bn_momentum)
        self.shortcut = nn.Sequential(*pre_activation(in_channels, bn_momentum),
                                      nn.Conv2d(in_channels, out_channels, 1, stride=2))

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + self.shortcut(x)


class ResBlockConvTV2(nn.Module):
    """y = ConvT3x3_s2(ReLU(BN(Conv1x1(ReLU(BN(x)))))) + ConvT3x3_s2(ReLU(BN(x))): doubles height and width."""

    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float = KERAS_BN_MOMENTUM):
        super().__init__()
        self.residual = nn.Sequential(
            *pre_activation(in_channels, bn_momentum), nn.Conv2d(in_channels, out_channels, 1),
            *pre_activation(out_channels, bn_momentum), upsample_conv(out_channels, out_channels),
        )
        self.shortcut = nn.Sequential(*pre_activation(in_channels, bn_momentum),
                                      upsample_conv(in_channels, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + self.shortcut(x)


class PatchGAN(nn.Module):
    """A fully convolutional discriminator: one real-vs-generated logit per image patch, not one per image.

    Layer i: Conv3x3(filters[i], strides[i], 'same') -> BN -> LeakyReLU(0.3) -> Dropout(0.25), as the original,
    which also normalises (BN) and drops out the last layer's logits and only skips the LeakyReLU there. With
    normalisation="inference" (the original as it ran, module docstring) the BN layers are learned affine maps and
    dropout is off; with "batch", the last BN would equalise the mean logit of every batch.
    The logit map has the input's size divided by the product of the strides: the original's six layers with
    strides (2, 2, 2, 1, 1, 1) turn a 256x256 image into 32x32 logits, each judging an overlapping patch.
    """

    def __init__(self, in_channels: int, filters: tuple[int, ...], strides: tuple[int, ...],
                 bn_momentum: float = KERAS_BN_MOMENTUM, dropout: float = PATCHGAN_DROPOUT,
                 slope: float = KERAS_LEAKY_SLOPE, normalisation: str = "inference"):
        super().__init__()
        keep_inference_mode(self, normalisation)  # checks the name
        self.normalisation = normalisation
        if len(filters) != len(strides):
            raise ValueError(f"one stride per layer: {len(filters)} filters but {len(strides)} strides")
        layers, channels = [], in_channels
        for i, (width, stride) in enumerate(zip(filters, strides)):
            layers += [KerasSameConv2d(channels, width, 3, stride=stride),
                       nn.BatchNorm2d(width, momentum=bn_momentum, eps=KERAS_BN_EPS)]
            if i < len(filters) - 1:
                layers.append(nn.LeakyReLU(slope))
            layers.append(nn.Dropout(dropout))
            channels = width
        self.layers = nn.Sequential(*layers)
        self.downscale = math.prod(strides)  # input size / logit map size
        self.train()

    def train(self, mode: bool = True) -> "PatchGAN":
        super().train(mode)
        keep_inference_mode(self, self.normalisation)
        return self

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def keras_init(module: nn.Module) -> None:
    """Keras' default initialisation: glorot-uniform kernels and zero biases for every conv and dense layer.

    PyTorch's own default (kaiming-uniform with a=sqrt(5)) draws smaller weights; the original trained from Keras'.
    Glorot depends on fan_in + fan_out only, so it is the same for a transposed conv as for a conv.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
