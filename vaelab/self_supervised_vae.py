"""The self-supervised VAE (Gatopoulos & Tomczak 2020, §3): learn a deterministic, discrete y = d(x) first
(a smaller or sketched image), then what it leaves out.

Variables, with K transforms (K = 1 is the paper's two-level model, K = 0 the plain VAE):

    y_{K+1} = x,  y_k = d(y_{k+1})                              the images, smallest y_1 (vaelab.transforms)
    u ~ q(u | y_1),  z_k ~ q(z_k | y_{k+1})                      Gaussian encoders, spatial latents C x r x r
    p(u) p(y_1 | u) prod_k p(z_k | y_k, z_{k-1}) p(y_{k+1} | y_k, z_k),   z_0 = u

p(u) is a prior of vaelab.priors (RealNVP in the paper), p(z_k | .) Gaussian, and every p(y | .) the discretized
logistic mixture of vaelab.distributions. With q(y|x) a point mass the bound is (eq-ssvae-klevel; the paper's §3.4,
the KL sum over k = 1..K)

    ELBO = sum_k E log p(y_{k+1} | y_k, z_k) + E log p(y_1 | u) - KL(q(u|y_1) || p(u))
           - sum_{k=1..K} E KL(q(z_k | y_{k+1}) || p(z_k | y_k, z_{k-1}))         = RE_x + RE_y - KL_u - KL_z

estimated as srVAE does, with one sample of every latent and Monte-Carlo KLs log q - log p at that sample
(`vaelab.losses.SelfSupervisedELBO` is what fit minimises). The modes of the paper's §3.3 (generation,
super-resolution, the reconstructions) are in `self_supervised_modes.py`, built on this model's passes.
"""
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import transforms
from .distributions import dmol_channels, dmol_log_prob, dmol_sample, normal_log_prob, reparameterize
from .images import check_images
from .nn.densenet import DenselyDecoder, DenselyEncoder, DenselyNetwork, data_dependent_init, scale_factor
from .priors import make_prior


@dataclass(frozen=True)
class SelfSupervisedVAEConfig:
    """Everything that fixes the networks. Each network is (growth rate, steps) or, for the DenselyNetworks that
    fuse two inputs, (growth rate, steps, blocks); the defaults are the srVAE CIFAR-10 networks (the paper's
    Appendix A.3)."""

    image_size: int = 32
    in_channels: int = 3
    transforms: tuple[str, ...] = ("downscale",)  # applied to x first; () is the plain VAE
    sketch_invert: bool = False  # sketch the negative (light objects on a dark background)
    latent_channels: int = 16  # every latent (u, z_1, ..., z_K) is latent_channels x latent_size x latent_size
    latent_size: int = 8
    n_mix: int = 10  # logistic components per pixel
    prior: str = "realnvp"  # p(u): "standard_normal", "mog" or "realnvp"
    prior_options: tuple[tuple[str, int], ...] = (("scales", 2), ("growth", 64), ("steps", 5))
    top_encoder: tuple[int, ...] = (64, 3)  # q(u | y_1)
    top_decoder: tuple[int, ...] = (128, 4)  # p(y_1 | u)
    encoder: tuple[int, ...] = (16, 4)  # q(z_k | y_{k+1})
    prior_image: tuple[int, ...] = (32, 5)  # the y_k branch of p(z_k | y_k, z_{k-1})
    prior_latent: tuple[int, ...] = (64, 3, 3)  # its z_{k-1} branch
    prior_core: tuple[int, ...] = (64, 3, 3)  # what fuses the two branches
    decoder_latent: tuple[int, ...] = (64, 8)  # the z_k branch of p(y_{k+1} | y_k, z_k)
    decoder_core: tuple[int, ...] = (64, 5, 3)  # what fuses it with the upsampled y_k
    logvar_bound: float = 7.0  # srVAE: every Gaussian log-variance goes through hardtanh(-7, 7)

    def __post_init__(self):
        shapes = transforms.level_shapes((self.in_channels, self.image_size, self.image_size), self.transforms)
        for c, h, _ in shapes:
            scale_factor(h, self.latent_size)  # every level must reach the latent size by halvings
            dmol_channels(c, self.n_mix)  # 1 or 3 channels

    @property
    def num_transforms(self) -> int:
        """K: the model has K + 1 levels of latents (u, z_1, ..., z_K), the paper's "two-level" model K = 1."""
        return len(self.transforms)


# Quick: Fashion-MNIST 28 -> 14 (-> 7) with small growth rates, so that the book's runs fit minutes on 2 CPU cores.
# As in srVAE, the decoders are wider than the encoders (growth 16 against 4; srVAE: 128 against 16). The 7x7
# latents cannot be squeezed, so the RealNVP prior has one scale (four checkerboard couplings).
QUICK = dict(image_size=28, in_channels=1, latent_channels=4, latent_size=7, n_mix=5, prior="realnvp",
             prior_options=(("scales", 1), ("growth", 8), ("steps", 2)), top_encoder=(4, 2), top_decoder=(16, 2),
             encoder=(4, 2), prior_image=(4, 2), prior_latent=(8, 2, 1), prior_core=(8, 2, 1),
             decoder_latent=(16, 2), decoder_core=(8, 2, 1))
# Full: CIFAR-10 two-level with the RealNVP prior and srVAE's topology at half its growth rates (book chapter 5); its
# baseline VAE uses srVAE's densenet32 networks (q: DenselyEncoder growth 16, 8 steps; p: growth 128, 6 steps), also
# halved.
FULL = dict(image_size=32, in_channels=3, latent_channels=16, latent_size=8, n_mix=10, prior="realnvp",
            prior_options=(("scales", 2), ("growth", 32), ("steps", 5)), top_encoder=(32, 3), top_decoder=(64, 4),
            encoder=(8, 4), prior_image=(16, 5), prior_latent=(32, 3, 3), prior_core=(32, 3, 3),
            decoder_latent=(32, 8), decoder_core=(32, 5, 3))
PRESETS = {
    "quick_vae": SelfSupervisedVAEConfig(**QUICK, transforms=()),
    "quick_2level": SelfSupervisedVAEConfig(**QUICK, transforms=("downscale",)),
    "quick_3level": SelfSupervisedVAEConfig(**QUICK, transforms=("downscale", "downscale")),
    "quick_sketch": SelfSupervisedVAEConfig(**QUICK, transforms=("sketch",), sketch_invert=True),
    "cifar10_vae": SelfSupervisedVAEConfig(**{**FULL, "top_encoder": (8, 8), "top_decoder": (64, 6)}, transforms=()),
    "cifar10_2level": SelfSupervisedVAEConfig(**FULL, transforms=("downscale",)),
    "cifar10_3level": SelfSupervisedVAEConfig(**FULL, transforms=("downscale", "downscale")),
    "cifar10_sketch": SelfSupervisedVAEConfig(**FULL, transforms=("sketch",)),
}


def normal_parameters(output: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """A network's 2C output channels -> (mu, log sigma^2), the log-variance clamped by hardtanh to +-bound."""
    mu, logvar = output.chunk(2, dim=1)
    return mu, F.hardtanh(logvar, -bound, bound)


class TopLevel(nn.Module):
    """q(u | y_1) and p(y_1 | u): on their own, a VAE of the smallest image (of x itself when K = 0)."""

    def __init__(self, c: SelfSupervisedVAEConfig, image_shape: tuple[int, int, int]):
        super().__init__()
        channels, size, _ = image_shape
        sf = scale_factor(size, c.latent_size)
        self.encoder = DenselyEncoder(channels, 2 * c.latent_channels, *c.top_encoder, sf)
        self.decoder = DenselyDecoder(c.latent_channels, dmol_channels(channels, c.n_mix), *c.top_decoder, sf)


class Level(nn.Module):
    """Level k >= 1: q(z_k | y_{k+1}), p(z_k | y_k, z_{k-1}) and p(y_{k+1} | y_k, z_k)."""

    def __init__(self, c: SelfSupervisedVAEConfig, smaller: tuple[int, int, int], larger: tuple[int, int, int]):
        super().__init__()
        latent, (small_c, small_size, _), (large_c, large_size, _) = c.latent_channels, smaller, larger
        self.large_size = large_size
        self.encoder = DenselyEncoder(large_c, 2 * latent, *c.encoder, scale_factor(large_size, c.latent_size))
        self.prior_image = DenselyEncoder(small_c, latent, *c.prior_image, scale_factor(small_size, c.latent_size))
        self.prior_latent = DenselyNetwork(latent, latent, *c.prior_latent)
        self.prior_core = DenselyNetwork(2 * latent, 2 * latent, *c.prior_core)
        outputs = dmol_channels(large_c, c.n_mix)
        self.decoder_latent = DenselyDecoder(latent, outputs, *c.decoder_latent,
                                             scale_factor(large_size, c.latent_size))
        self.decoder_core = DenselyNetwork(outputs + small_c, outputs, *c.decoder_core)

    def conditional_prior(self, y_small: Tensor, z_previous: Tensor) -> Tensor:
        """The 2C channels of p(z_k | y_k, z_{k-1}): the two inputs encoded apart, then fused."""
        return self.prior_core(torch.cat([F.elu(self.prior_image(y_small)), self.prior_latent(z_previous)], dim=1))

    def decode(self, y_small: Tensor, z: Tensor) -> Tensor:
        """The likelihood parameters of y_{k+1}: y_k bilinearly enlarged beside the decoded z_k, then fused."""
        y_up = F.interpolate(y_small, size=(self.large_size,) * 2, mode="bilinear", align_corners=False)
        return self.decoder_core(torch.cat([y_up, self.decoder_latent(z)], dim=1))


@dataclass
class Inference:
    """One pass of the inference and generative networks over a batch, per image (N,) where it is a number."""

    images: list[Tensor]  # [y_1, ..., y_K, x]
    latents: list[Tensor]  # [u, z_1, ..., z_K], one sample each from q
    log_p: list[Tensor] = field(default_factory=list)  # log p(y_1|u), log p(y_2|y_1,z_1), ..., log p(x|y_K,z_K)
    kl: list[Tensor] = field(default_factory=list)  # log q - log p at the sampled u, z_1, ..., z_K

    @property
    def re_x(self) -> Tensor:
        return self.log_p[-1]

    @property
    def re_y(self) -> Tensor:
        return sum(self.log_p[:-1], torch.zeros_like(self.log_p[-1]))

    @property
    def kl_u(self) -> Tensor:
        return self.kl[0]

    @property
    def kl_z(self) -> Tensor:
        return sum(self.kl[1:], torch.zeros_like(self.kl[0]))

    @property
    def elbo(self) -> Tensor:
        """RE_x + RE_y - KL_u - KL_z: one sample of log p(x, y, u, z) - log q(u, z | x), the log importance weight."""
        return self.re_x + self.re_y - self.kl_u - self.kl_z


class SelfSupervisedVAE(nn.Module):
    """The self-supervised VAE with K transforms (K + 1 levels of latents: the paper's two-level model has K = 1,
    and `levels` holds the K Level networks); K = 0 is the plain VAE with the same likelihood and prior.

    Images enter and leave in [0,1] and must be 8-bit (k/255), the values the discretized likelihood is defined on.
    """

    def __init__(self, config: SelfSupervisedVAEConfig):
        super().__init__()
        self.config = c = config
        self.image_shapes = transforms.level_shapes((c.in_channels, c.image_size, c.image_size), c.transforms)
        self.latent_shape = (c.latent_channels, c.latent_size, c.latent_size)
        self.prior = make_prior(c.prior, self.latent_shape, **dict(c.prior_options))  # p(u)
        self.top = TopLevel(c, self.image_shapes[0])
        self.levels = nn.ModuleList(Level(c, small, large)
                                    for small, large in zip(self.image_shapes, self.image_shapes[1:]))

    @property
    def dims(self) -> int:
        """D, the number of dimensions of x: bits per dimension divide by it."""
        return math.prod(self.image_shapes[-1])

    def check_input(self, x: Tensor) -> None:
        check_images(x, shape=self.image_shapes[-1], name="x")
        if not transforms.is_8bit(x):
            raise ValueError("the discretized logistic likelihood needs 8-bit images (values k/255); "
                             "use vaelab.transforms.quantize(x)")

    def transform(self, x: Tensor) -> list[Tensor]:
        """[y_1, ..., y_K, x]."""
        return transforms.pyramid(x, self.config.transforms, self.config.sketch_invert)

    # ------------------------------------------------------------ the distributions, one function each

    def q_u(self, y1: Tensor) -> tuple[Tensor, Tensor]:
        return normal_parameters(self.top.encoder(y1), self.config.logvar_bound)

    def q_z(self, k: int, y_larger: Tensor) -> tuple[Tensor, Tensor]:
        """q(z_k | y_{k+1}), k = 1..K."""
        return normal_parameters(self.levels[k - 1].encoder(y_larger), self.config.logvar_bound)

    def p_z(self, k: int, y_small: Tensor, z_previous: Tensor) -> tuple[Tensor, Tensor]:
        """p(z_k | y_k, z_{k-1}), with z_0 = u."""
        return normal_parameters(self.levels[k - 1].conditional_prior(y_small, z_previous), self.config.logvar_bound)

    def p_y1_params(self, u: Tensor) -> Tensor:
        return self.top.decoder(u)

    def p_y_params(self, k: int, y_small: Tensor, z: Tensor) -> Tensor:
        """The likelihood parameters of y_{k+1} given y_k and z_k."""
        return self.levels[k - 1].decode(y_small, z)

    def image_log_prob(self, y: Tensor, params: Tensor) -> Tensor:
        return dmol_log_prob(y, params, self.config.n_mix)

    def sample_image(self, params: Tensor, how: str = "argmax") -> Tensor:
        channels = 1 if params.shape[1] == dmol_channels(1, self.config.n_mix) else 3
        return dmol_sample(params, channels, self.config.n_mix, how)

    # ------------------------------------------------------------ the bound

    def infer_u(self, x: Tensor) -> tuple[list[Tensor], Tensor, Tensor, Tensor]:
        """y = d(x) and one u ~ q(u | y_1): the images [y_1, ..., y_K, x], q's mean and log-variance, and u."""
        self.check_input(x)
        ys = self.transform(x)
        mu, logvar = self.q_u(ys[0])
        return ys, mu, logvar, reparameterize(mu, logvar)

    def kl_u(self, u: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
        """log q(u | y_1) - log p(u) at the sampled u: one sample of KL(q(u | y_1) || p(u)), per image."""
        return normal_log_prob(u, mu, logvar) - self.prior.log_prob(u)

    def infer(self, x: Tensor) -> Inference:
        """y = d(x), one sample of every latent from q, and each term of the ELBO at those samples."""
        ys, mu, logvar, u = self.infer_u(x)
        out = Inference(ys, [u])
        out.log_p.append(self.image_log_prob(ys[0], self.p_y1_params(u)))  # log p(y_1 | u)
        # (after log p(y_1 | u): the order the graph is built in is the order autograd sums u's gradients in)
        out.kl.append(self.kl_u(u, mu, logvar))
        for k in range(1, self.config.num_transforms + 1):
            mu_q, logvar_q = self.q_z(k, ys[k])
            z = reparameterize(mu_q, logvar_q)
            mu_p, logvar_p = self.p_z(k, ys[k - 1], out.latents[-1])
            out.kl.append(normal_log_prob(z, mu_q, logvar_q) - normal_log_prob(z, mu_p, logvar_p))
            out.log_p.append(self.image_log_prob(ys[k], self.p_y_params(k, ys[k - 1], z)))  # log p(y_{k+1}|y_k,z_k)
            out.latents.append(z)
        return out

    def forward(self, x: Tensor) -> Inference:
        return self.infer(x)

    # ------------------------------------------------------------ the generative pass

    def generate_levels(self, y1: Tensor, u: Tensor, how: str = "argmax", given_images: list[Tensor] | None = None,
                        given_latents: list[Tensor] | None = None) -> tuple[list[Tensor], list[Tensor]]:
        """From y_1 and u up the pyramid, level by level: z_k from the given latents or drawn from
        p(z_k | y_k, z_{k-1}); y_{k+1} from the given images or drawn from p(y_{k+1} | y_k, z_k). Returns the images
        [y_1, ..., y_K, x] and, per level, log p(z_k | y_k, z_{k-1}) of the z_k used."""
        images, log_p_z, previous = [y1], [], u
        for k in range(1, self.config.num_transforms + 1):
            mu_p, logvar_p = self.p_z(k, images[-1], previous)
            z = given_latents[k - 1] if given_latents else reparameterize(mu_p, logvar_p)
            log_p_z.append(normal_log_prob(z, mu_p, logvar_p))
            if given_images and k - 1 < len(given_images):
                images.append(given_images[k - 1])
            else:
                images.append(self.sample_image(self.p_y_params(k, images[-1], z), how))
            previous = z
        return images, log_p_z

    @torch.no_grad()
    def sample(self, n: int, how: str = "argmax") -> Tensor:
        """x ~ p(x): u ~ p(u), y_1 ~ p(y_1 | u), then every level's image in turn (the paper's generation mode)."""
        u = self.prior.sample(n, device=next(self.parameters()).device)
        return self.generate_levels(self.sample_image(self.p_y1_params(u), how), u, how)[0][-1]

    @torch.no_grad()
    def log_importance_weights(self, x: Tensor, k: int) -> Tensor:
        """k independent samples of log p(x, y, u, z) - log q(u, z | x) per image: a tensor (k, N), for
        vaelab.metrics.log_likelihood_bounds (its mean is the ELBO, its log-mean-exp the IWAE bound)."""
        return self.infer(x.repeat(k, 1, 1, 1)).elbo.view(k, len(x))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Data-dependent initialisation (Salimans & Kingma): one pass over the batch x sets every weight-normalised
        layer so that its outputs start with mean 0 and standard deviation 0.01 (srVAE's scale)."""
        with data_dependent_init(self):
            self.infer(x)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
