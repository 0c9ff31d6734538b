"""The VAE of the Split-VAE paper (Asperti, Bugo & Filippini 2022, §3.1; book chapter 2), in the shape of
Tomczak's intro_dgm: an encoder q(z|x), a prior p(z) and a decoder p(x|z), each a module of its own, tied
together by `VAE`.

    x --Encoder--> 512-d embedding --Linear--> mu, log sigma^2 --(z = mu + sigma * eps)--> z
    z --Linear (back_to_emb)--> 512-d embedding --Decoder--> x_hat in [0,1]
"""
import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .distributions import normal_log_prob, reparameterize, standard_normal_log_prob
from .images import check_image_batch
from .nn import PAPER_BN_MOMENTUM, ResFcBlock, downsample, scale_block, upsample


@dataclass(frozen=True)
class VAEConfig:
    """Everything that fixes the network's shape. The paper runs use base_dim=64, num_scales=4, emb_dim=512."""

    image_size: int = 32  # height = width
    in_channels: int = 1
    latent_dim: int = 32
    base_dim: int = 64  # channels after the first conv; doubled at each downsampling (capped at 1024)
    num_scales: int = 4  # the encoder halves the resolution this many times
    emb_dim: int = 512
    blocks_per_scale: int = 1
    decoder_start: int = 4  # the decoder's first resolution; it doubles up to image_size
    bn_momentum: float = PAPER_BN_MOMENTUM  # see vaelab.nn.resnet: short runs need faster-moving statistics

    def __post_init__(self):
        steps = math.log2(self.image_size / self.decoder_start)
        if steps != int(steps) or steps < 1:
            raise ValueError(f"image_size {self.image_size} must be decoder_start {self.decoder_start} times a power of 2")
        if self.image_size % 2**self.num_scales:
            raise ValueError(f"image_size {self.image_size} cannot be halved num_scales={self.num_scales} times")

    @property
    def decoder_dims(self) -> list[int]:
        """Channels per decoder resolution, widest first: 32x32 -> [512, 256, 128, 64] at 4, 8, 16, 32."""
        levels = int(math.log2(self.image_size // self.decoder_start)) + 1
        return [min(self.base_dim * 2**i, 1024) for i in range(levels)][::-1]


# The paper's configurations (its §3.1 and §5) and a small one that trains in minutes on two CPU cores at 28x28.
PRESETS = {
    "mnist": VAEConfig(image_size=32, in_channels=1, latent_dim=32),
    "cifar10": VAEConfig(image_size=32, in_channels=3, latent_dim=200),
    "celeba": VAEConfig(image_size=64, in_channels=3, latent_dim=150),
    "quick": VAEConfig(image_size=28, in_channels=1, latent_dim=16, base_dim=24, num_scales=2, emb_dim=128,
                       decoder_start=7, bn_momentum=0.1),
}
PAPER_BETA = {"mnist": 8.0, "cifar10": 3.0, "celeba": 3.0}


class Encoder(nn.Module):
    """x -> (mu, log sigma^2) of the diagonal Gaussian q(z|x)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        c = config
        layers, dim = [downsample(c.in_channels, c.base_dim)], c.base_dim
        for _ in range(c.num_scales - 1):
            layers += [scale_block(dim, dim, c.blocks_per_scale, bn_momentum=c.bn_momentum), downsample(dim, 2 * dim)]
            dim *= 2
        pool = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers, *pool, ResFcBlock(dim, c.emb_dim, bn_momentum=c.bn_momentum))
        self.to_mu = nn.Linear(c.emb_dim, c.latent_dim)
        self.to_logvar = nn.Linear(c.emb_dim, c.latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        embedding = self.features(x)
        return self.to_mu(embedding), self.to_logvar(embedding)

    @staticmethod
    def sample(mu: Tensor, logvar: Tensor) -> Tensor:
        """The reparameterisation trick: z = mu + sigma * eps with eps ~ N(0, I), differentiable in mu and sigma."""
        return reparameterize(mu, logvar)

    @staticmethod
    def log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
        """log q(z|x), summed over latent dimensions."""
        return normal_log_prob(z, mu, logvar)


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim

    def sample(self, n: int, device: torch.device | str | None = None) -> Tensor:
        return torch.randn(n, self.latent_dim, device=device)

    def log_prob(self, z: Tensor) -> Tensor:
        return standard_normal_log_prob(z)


class Decoder(nn.Module):
    """z -> pre-sigmoid images with `out_channels` channels (C for the VAE, 2C+1 for the Split-VAE)."""

    def __init__(self, config: VAEConfig, out_channels: int):
        super().__init__()
        c, dims = config, config.decoder_dims
        self.from_latent = nn.Linear(c.latent_dim, c.emb_dim)  # 'back_to_emb': also maps prior samples
        self.to_grid = nn.Linear(c.emb_dim, c.decoder_start**2 * dims[0])
        self.grid_shape = (dims[0], c.decoder_start, c.decoder_start)
        layers = []
        for d_in, d_out in zip(dims, dims[1:]):
            layers += [upsample(d_in, d_out), scale_block(d_out, d_out, c.blocks_per_scale, bn_momentum=c.bn_momentum)]
        layers.append(nn.Conv2d(dims[-1], out_channels, 3, padding="same"))
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        grid = self.to_grid(self.from_latent(z)).view(-1, *self.grid_shape)
        return self.body(grid)


@dataclass
class VAEOutput:
    x_hat: Tensor  # the reconstruction, in [0,1]
    mu: Tensor
    logvar: Tensor
    z: Tensor


class VAE(nn.Module):
    """The plain VAE: x_hat = sigmoid(decoder(z)), a Gaussian q(z|x) and a standard normal prior."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.prior = StandardNormalPrior(config.latent_dim)
        self.decoder = Decoder(config, self.decoder_channels)

    @property
    def decoder_channels(self) -> int:
        return self.config.in_channels

    def check_input(self, x: Tensor) -> None:
        c = self.config
        check_image_batch(x, shape=(c.in_channels, c.image_size, c.image_size), dtype=next(self.parameters()).dtype)

    def check_code(self, z: Tensor) -> None:
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"expected latent codes of shape N x {self.config.latent_dim}, "
                             f"got {tuple(getattr(z, 'shape', ())) or type(z).__name__}")

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.check_input(x)
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        self.check_code(z)
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: Tensor) -> VAEOutput:
        mu, logvar = self.encode(x)
        z = self.encoder.sample(mu, logvar)
        return VAEOutput(self.decode(z), mu, logvar, z)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Images decoded from z ~ p(z)."""
        return self.decode(self.prior.sample(n, device=next(self.parameters()).device))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
