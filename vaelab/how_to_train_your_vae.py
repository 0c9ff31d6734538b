"""The residual VAE of Rivera's "How to train your VAE" (ICIP 2024, Sec. 2 and Fig. 3), rebuilt from the original
Keras code.

    x in [0,1] -> 2x - 1 -> LayerNorm over (H, W) -> Conv3x3 -> R x [r ResBlockIdV2 -> ResBlockConvV2]
               -> Conv1x1 (L/8 channels) -> flatten -> Linear: mu, log sigma^2          (the residual encoder)
    z = mu + sigma * eps                                                                 (the Gaussian sampler)
    z -> Linear -> (L/8) x s x s -> Conv3x3 -> R x [r' ResBlockIdV2 -> ResBlockConvTV2]
      -> Conv1x1, linear: an image on the [-1, 1] scale -> (y + 1) / 2, clipped to [0,1]   (the residual decoder)

The paper (Fig. 3) names R=6 stages with r=2 identity blocks each; the code's decoder uses r'=1, and we follow the
code. The original works on images in [-1, 1] and never squashes the decoder's output: its loss (the L1 distance,
`vaelab.losses.HowToTrainLoss`) and its discriminator see the linear output y. This model's interface is every
vaelab model's (`encode`, `decode`, `forward`, `sample`, `prior`), with images in [0,1] in and out: `encode` maps
its input to [-1, 1] itself, `decode` returns (y + 1) / 2 clipped to [0,1], and `forward` also returns y itself
(`x_hat_signed`) for the loss.

Batch normalisation and dropout run as the original ran them (`vaelab.nn.resnet_v2`): in inference mode during
training too, so that every BatchNormalization is a learned per-channel affine map (config `normalisation`).
"""
import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .distributions import reparameterize
from .images import check_image_batch
from .nn.resnet_v2 import (KERAS_BN_MOMENTUM, PatchGAN, ResBlockConvTV2, ResBlockConvV2, ResBlockIdV2,
                           keep_inference_mode, keras_init)
from .vae import StandardNormalPrior, VAEOutput

KERAS_LAYER_NORM_EPS = 1e-3


@dataclass(frozen=True)
class HowToTrainYourVAEConfig:
    """The network's shape, and the PatchGAN discriminator trained with it. Defaults: the paper's CelebA-HQ run."""

    image_size: int = 256  # height = width
    in_channels: int = 3
    latent_dim: int = 512  # L; the encoder's last conv has L/8 channels, as in the original
    filters: int = 128  # channels of every conv inside the encoder and decoder (the original: 128 everywhere)
    stages: int = 6  # R: the encoder halves the size R times, the decoder doubles it R times
    encoder_blocks: int = 2  # r: identity blocks per encoder stage
    decoder_blocks: int = 1  # identity blocks per decoder stage (the code's 1; the paper's caption says 2)
    bn_momentum: float = KERAS_BN_MOMENTUM  # matters only with normalisation="batch"
    # "inference": batch norm and dropout in inference mode while training, as the original ran (its train_step
    # calls the networks without training=True); "batch": PyTorch's training mode (batch statistics, dropout on)
    normalisation: str = "inference"
    discriminator_filters: tuple[int, ...] = (128, 128, 128, 64, 64, 1)
    discriminator_strides: tuple[int, ...] = (2, 2, 2, 1, 1, 1)

    def __post_init__(self):
        if self.image_size % 2**self.stages or self.image_size < 2**self.stages:
            raise ValueError(f"image_size {self.image_size} cannot be halved stages={self.stages} times")
        if self.latent_dim % 8:
            raise ValueError(f"latent_dim {self.latent_dim} must be a multiple of 8 (the code has L/8 channels)")
        keep_inference_mode(nn.Module(), self.normalisation)  # checks the name
        if self.image_size % math.prod(self.discriminator_strides):
            raise ValueError(f"image_size {self.image_size} is not divisible by the discriminator's strides "
                             f"{self.discriminator_strides}")

    @property
    def code_channels(self) -> int:
        return self.latent_dim // 8

    @property
    def code_size(self) -> int:
        """Height and width of the encoder's last feature map (and of the decoder's first)."""
        return self.image_size // 2**self.stages


PRESETS = {
    # The original code's: CelebA-HQ 256x256, L=512, 128 filters, R=6, r=2 (encoder) and 1 (decoder).
    "celebahq256": HowToTrainYourVAEConfig(),
    # The book's GPU run: CelebA 64x64 with the Split-VAE crop, R=4 stages (64 -> 4), the original's PatchGAN.
    "celeba64": HowToTrainYourVAEConfig(image_size=64, latent_dim=256, filters=64, stages=4),
    # The book's CPU run: Fashion-MNIST padded to 32x32, R=3 (32 -> 4); a 3-layer PatchGAN with an 8x8 logit map.
    # L=128, not 16-32: with few latents each one carries much of the image, and the reconstruction's
    # pull on its variance dwarfs the regulariser's push of 0.1; at L=16 the runs with and without the regulariser
    # had variances within a factor of 2 after 500 steps, at L=128 a factor of 4 after the chapter's 200 (measured).
    "quick": HowToTrainYourVAEConfig(image_size=32, in_channels=1, latent_dim=128, filters=16, stages=3,
                                     discriminator_filters=(16, 16, 1),
                                     discriminator_strides=(2, 2, 1)),
}


def to_signed(x: Tensor) -> Tensor:
    """[0,1] -> [-1,1], the original's data scale (its Rescaling(1/127.5, offset=-1) of 8-bit pixels)."""
    return 2 * x - 1


def to_unit(y: Tensor) -> Tensor:
    """[-1,1] -> [0,1], clipped: the linear decoder can overshoot either end."""
    return ((y + 1) / 2).clamp(0, 1)


class Encoder(nn.Module):
    """x on the [-1,1] scale -> (mu, log sigma^2)."""

    def __init__(self, config: HowToTrainYourVAEConfig):
        super().__init__()
        c = config
        # Keras LayerNormalization(axis=(1, 2)): each image's each channel is normalised over its H x W pixels,
        # with a learned gain and offset *per pixel* (H x W of each), shared by the channels.
        self.normalise = nn.LayerNorm((c.image_size, c.image_size), eps=KERAS_LAYER_NORM_EPS)
        layers = [nn.Conv2d(c.in_channels, c.filters, 3, padding=1)]
        for _ in range(c.stages):
            layers += [ResBlockIdV2(c.filters, c.bn_momentum) for _ in range(c.encoder_blocks)]
            layers.append(ResBlockConvV2(c.filters, c.filters, c.bn_momentum))
        layers += [nn.Conv2d(c.filters, c.code_channels, 1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        code = c.code_channels * c.code_size**2
        self.to_mu = nn.Linear(code, c.latent_dim)
        self.to_logvar = nn.Linear(code, c.latent_dim)

    def forward(self, x_signed: Tensor) -> tuple[Tensor, Tensor]:
        features = self.features(self.normalise(x_signed))
        return self.to_mu(features), self.to_logvar(features)


class Decoder(nn.Module):
    """z -> an image on the [-1,1] scale, from a linear last layer (no tanh, no sigmoid)."""

    def __init__(self, config: HowToTrainYourVAEConfig):
        super().__init__()
        c = config
        self.from_latent = nn.Linear(c.latent_dim, c.code_channels * c.code_size**2)
        self.grid_shape = (c.code_channels, c.code_size, c.code_size)
        layers = [nn.Conv2d(c.code_channels, c.filters, 3, padding=1)]
        for stage in range(c.stages):
            # the last upsampling block already has the image's channels, as the original's filter list [..., 3]
            out_channels = c.in_channels if stage == c.stages - 1 else c.filters
            layers += [ResBlockIdV2(c.filters, c.bn_momentum) for _ in range(c.decoder_blocks)]
            layers.append(ResBlockConvTV2(c.filters, out_channels, c.bn_momentum))
        layers.append(nn.Conv2d(c.in_channels, c.in_channels, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.body(self.from_latent(z).view(-1, *self.grid_shape))


@dataclass
class HowToTrainYourVAEOutput(VAEOutput):
    x_hat_signed: Tensor  # the decoder's linear output on the [-1,1] scale; x_hat = (x_hat_signed + 1) / 2, clipped


class HowToTrainYourVAE(nn.Module):
    """Rivera's residual VAE: a Gaussian q(z|x), a standard normal prior and a linear-output decoder.

    What makes the paper is its training (`vaelab.losses.HowToTrainLoss`); the network is a plain VAE's.
    Weights start as Keras initialises them (glorot-uniform kernels, zero biases).
    """

    def __init__(self, config: HowToTrainYourVAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.prior = StandardNormalPrior(config.latent_dim)
        self.decoder = Decoder(config)
        keras_init(self)
        self.train()

    def train(self, mode: bool = True) -> "HowToTrainYourVAE":
        super().train(mode)
        keep_inference_mode(self, self.config.normalisation)
        return self

    def check_input(self, x: Tensor) -> None:
        c = self.config
        check_image_batch(x, shape=(c.in_channels, c.image_size, c.image_size), dtype=next(self.parameters()).dtype)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log sigma^2) of q(z|x) for images x in [0,1] (mapped to [-1,1] here, as the original's data)."""
        self.check_input(x)
        return self.encoder(to_signed(x))

    def decode(self, z: Tensor) -> Tensor:
        """Images in [0,1]: the linear output y mapped by (y + 1) / 2 and clipped."""
        return to_unit(self.decoder(z))

    def forward(self, x: Tensor) -> HowToTrainYourVAEOutput:
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar)  # the sampler: z = mu + sigma * eps
        y = self.decoder(z)
        return HowToTrainYourVAEOutput(to_unit(y), mu, logvar, z, x_hat_signed=y)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Images decoded from z ~ p(z)."""
        return self.decode(self.prior.sample(n, device=next(self.parameters()).device))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())


def patchgan(config: HowToTrainYourVAEConfig, seed: int = 0) -> PatchGAN:
    """The PatchGAN the config names, for images of its size, Keras-initialised from `seed` alone.

    Its weights do not depend on the global random state (nor change it), so the same seed gives the same
    discriminator wherever it is built: a resumed run's, and each run of an ablation.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        discriminator = PatchGAN(config.in_channels, config.discriminator_filters, config.discriminator_strides,
                                 bn_momentum=config.bn_momentum, normalisation=config.normalisation)
        keras_init(discriminator)
    return discriminator
