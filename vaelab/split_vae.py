"""Split-VAE (Asperti, Bugo & Filippini 2022, §3; the book's eq-split): a VAE whose decoder draws two images
and a mask.

    sigma, x1, x2 = sigmoid(one last conv with 2C+1 channels), split [sigma (1) | x1 (C) | x2 (C)]
    x_hat = sigma * x1 + (1 - sigma) * x2          (sigma has one channel, broadcast over the C colour channels)

Nothing else changes: the encoder, the prior and the loss are the plain VAE's, and the loss only ever sees x_hat.
No term asks x1, x2 or sigma to look like anything, so how the network uses the split is its own choice.
The architecture presets are `vaelab.vae.PRESETS` (the paper's networks differ from the VAE's only in the head).
"""
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .vae import VAE, VAEOutput


class PaperCount(NamedTuple):
    """A parameter count the paper reports, and which of Keras' two counts it is."""

    count: int
    convention: str  # "trainable": the weights alone; "total": plus BatchNorm's moving mean and variance


# The paper's Tables 1, 3 and 4. They do not use one convention: the MNIST figure is Keras' *trainable* count,
# the CIFAR-10 and CelebA figures its *total* count (every BatchNorm channel adds a moving mean and variance).
PAPER_PARAMETERS = {"mnist": PaperCount(12_793_667, "trainable"), "cifar10": PaperCount(13_061_143, "total"),
                    "celeba": PaperCount(28_989_363, "total")}


def blend(sigma: Tensor, x1: Tensor, x2: Tensor) -> Tensor:
    r"""x_hat = sigma (.) x1 + (1 - sigma) (.) x2, point-wise; sigma's single channel is broadcast over colours."""
    return sigma * x1 + (1 - sigma) * x2


@dataclass
class SplitVAEOutput(VAEOutput):
    sigma: Tensor  # N x 1 x H x W, in [0,1]
    x1: Tensor  # N x C x H x W, in [0,1]
    x2: Tensor


class SplitImages(NamedTuple):
    """What the decoder draws for a batch of latent codes, in the paper's figure order (top to bottom)."""

    sigma: Tensor
    x1: Tensor
    x2: Tensor
    x: Tensor


class SplitVAE(VAE):
    """The VAE of `vaelab.vae` with the Split-VAE head: the decoder's last conv emits 2C+1 channels."""

    @property
    def decoder_channels(self) -> int:
        return 1 + 2 * self.config.in_channels  # sigma, x1, x2

    def decode_parts(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(sigma, x1, x2): all three are sigmoids of the same last conv, as in the original code."""
        self.check_code(z)
        c = self.config.in_channels
        sigma, x1, x2 = torch.sigmoid(self.decoder(z)).split([1, c, c], dim=1)
        return sigma, x1, x2

    def decode(self, z: Tensor) -> Tensor:
        return blend(*self.decode_parts(z))

    def forward(self, x: Tensor) -> SplitVAEOutput:
        mu, logvar = self.encode(x)
        z = self.encoder.sample(mu, logvar)
        sigma, x1, x2 = self.decode_parts(z)
        return SplitVAEOutput(blend(sigma, x1, x2), mu, logvar, z, sigma=sigma, x1=x1, x2=x2)

    @torch.no_grad()
    def decode_split(self, z: Tensor, batch_size: int = 500) -> SplitImages:
        """x, x1, x2 and sigma for latent codes from anywhere (the prior, an ex-post GMM, an encoder), decoded in
        batches and returned on the CPU, ready to plot or measure.

        `sample(n)`, inherited from VAE, still returns x alone, so code written for any VAE keeps working.
        """
        self.eval()
        parameter = next(self.parameters())
        parts = [self.decode_parts(chunk.to(parameter.device, parameter.dtype)) for chunk in z.split(batch_size)]
        sigma, x1, x2 = (torch.cat(part).cpu() for part in zip(*parts))
        return SplitImages(sigma, x1, x2, blend(sigma, x1, x2))


def random_mix(x1: Tensor, x2: Tensor, seed: int = 0) -> Tensor:
    """The paper's "mix" sample set: half of the images taken from x1, the other half from x2.

    The original code takes the first half from x1 and the second from x2; we draw the half at random (with a
    seed), so that the mix does not depend on how the samples happen to be ordered.
    """
    if x1.shape != x2.shape:
        raise ValueError(f"x1 and x2 must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
    from_x1 = torch.randperm(len(x1), generator=torch.Generator().manual_seed(seed))[: len(x1) // 2].to(x1.device)
    mix = x2.clone()
    mix[from_x1] = x1[from_x1]
    return mix
