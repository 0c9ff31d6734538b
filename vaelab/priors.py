"""Priors p(u) over latent tensors of any shape (the self-supervised VAE keeps its latents spatial, C x H x W),
all behind one interface: `log_prob(u) -> (N,)` summed over every dimension, and `sample(n, device)`.

    StandardNormal        N(0, I)
    MixtureOfGaussians    sum_k pi_k N(m_k, diag s_k^2), everything learned (the paper's Table 2: 10 components)
    RealNVP               a flow (Dinh et al. 2016): u = f^{-1}(v), v ~ N(0, I), with
                          log p(u) = log N(f(u); 0, I) + log |det df/du|          (eq-realnvp)

RealNVP's f is built from affine couplings. A coupling leaves half of the entries, x_a, unchanged and uses them to
scale and shift the other half: y_b = (x_b + t(x_a)) * exp(s(x_a)), translate then scale as in the srVAE code. Its
Jacobian is triangular, so log|det| = sum s. The halves are a checkerboard of pixels, or after a squeeze (each 2x2
patch of pixels becomes 4 channels) the two halves of the channels. Multi-scale: after each scale but the last,
half of the squeezed tensor (a checkerboard of the patch positions) is factored out straight to N(0, I), and the
rest is transformed further at half the resolution.
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .distributions import LOG_2PI, standard_normal_log_prob
from .nn.densenet import DenseNetLayer, WeightNormConv


class StandardNormal(nn.Module):
    """p(u) = N(0, I) over tensors of shape `shape`."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)

    def log_prob(self, u: Tensor) -> Tensor:
        return standard_normal_log_prob(u)

    def sample(self, n: int, device: torch.device | str | None = None) -> Tensor:
        return torch.randn(n, *self.shape, device=device)


class MixtureOfGaussians(nn.Module):
    r"""p(u) = sum_k pi_k N(u; m_k, diag(exp(log s_k^2))), with pi = softmax(logits); all learned."""

    def __init__(self, shape: tuple[int, ...], components: int = 10):
        super().__init__()
        self.shape = tuple(shape)
        dims = math.prod(self.shape)
        self.means = nn.Parameter(torch.randn(components, dims))  # spread like prior samples, so no mode is empty
        self.log_vars = nn.Parameter(torch.zeros(components, dims))
        self.logits = nn.Parameter(torch.zeros(components))

    def log_prob(self, u: Tensor) -> Tensor:
        u = u.flatten(1)[:, None, :]  # N x 1 x D against K x D
        log_normal = -0.5 * ((u - self.means) ** 2 / self.log_vars.exp() + self.log_vars + LOG_2PI).sum(-1)
        return torch.logsumexp(F.log_softmax(self.logits, 0) + log_normal, dim=1)

    def sample(self, n: int, device: torch.device | str | None = None) -> Tensor:
        k = torch.multinomial(F.softmax(self.logits, 0), n, replacement=True)
        u = self.means[k] + torch.randn(n, self.means.shape[1], device=self.means.device) * (0.5 * self.log_vars[k]).exp()
        return u.view(n, *self.shape).to(device)


# ---------------------------------------------------------------- RealNVP


def checkerboard(height: int, width: int, parity: int, device=None) -> Tensor:
    """1 x 1 x H x W mask, 1 where (row + column) % 2 == parity."""
    rows, cols = torch.arange(height, device=device), torch.arange(width, device=device)
    return ((rows[:, None] + cols[None, :]) % 2 == parity).float()[None, None]


def squeeze(x: Tensor) -> Tensor:
    """B x C x H x W -> B x 4C x H/2 x W/2: channel 4c + 2i + j holds pixel (i, j) of every 2x2 patch of channel c."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"a squeeze needs even height and width, got {h} x {w}; use fewer RealNVP scales")
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: Tensor) -> Tensor:
    b, c4, h, w = x.shape
    return x.view(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, 2 * h, 2 * w)


# Patch positions (0,0), (1,1) go on to the next scale, (0,1), (1,0) are factored out: a checkerboard of the
# pixels, like the srVAE code's "alternate order" squeeze.
KEEP, FACTOR_OUT = [0, 3], [1, 2]


class Coupling(nn.Module):
    r"""y_b = (x_b + t(x_a)) * exp(s(x_a)),  s = scale * tanh(raw s),  log|det dy/dx| = sum_b s.

    mask "checkerboard": x_a is the pixels where checkerboard(parity) = 1, in every channel;
    mask "channel": x_a is one half of the channels (parity picks which), x_b the other.
    s and t come from a DenseNetLayer with channel attention and a 3x3 weight-normalised conv, as in srVAE.
    """

    def __init__(self, channels: int, mask: str, parity: int, growth: int, steps: int):
        super().__init__()
        if mask not in ("checkerboard", "channel"):
            raise ValueError(f"mask must be 'checkerboard' or 'channel', got {mask!r}")
        if mask == "channel" and channels % 2:
            raise ValueError(f"a channel-wise coupling splits the channels in halves; {channels} is odd")
        self.mask, self.parity = mask, parity
        self.conditioner = channels if mask == "checkerboard" else channels // 2
        changed = channels if mask == "checkerboard" else channels // 2
        layer = DenseNetLayer(self.conditioner, growth, steps)
        self.net = nn.Sequential(layer, WeightNormConv(layer.out_channels, 2 * changed, 3, padding=1))
        self.scale = nn.Parameter(torch.ones(changed, 1, 1))  # srVAE's weight-normalised per-channel rescale

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x.chunk(2, dim=1)
        return (a, b) if self.parity == 0 else (b, a)

    def _join(self, fixed: Tensor, changed: Tensor) -> Tensor:
        return torch.cat([fixed, changed] if self.parity == 0 else [changed, fixed], dim=1)

    def _shift_scale(self, fixed: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raw_s, t = self.net(fixed).chunk(2, dim=1)
        s = self.scale * torch.tanh(raw_s)  # tanh bounds the log-scale; `scale` lets it grow back if needed
        if keep is not None:  # checkerboard: only the unmasked pixels change
            s, t = s * (1 - keep), t * (1 - keep)
        return s, t

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """data -> base direction: (y, log|det dy/dx|) with log-det of shape (N,)."""
        if self.mask == "checkerboard":
            keep = checkerboard(*x.shape[-2:], self.parity, x.device)
            s, t = self._shift_scale(x * keep, keep)
            return (x + t) * s.exp(), s.flatten(1).sum(1)
        fixed, changing = self._halves(x)
        s, t = self._shift_scale(fixed)
        return self._join(fixed, (changing + t) * s.exp()), s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        """x = y * exp(-s) - t: the fixed half is unchanged, so s and t can be recomputed from it."""
        if self.mask == "checkerboard":
            keep = checkerboard(*y.shape[-2:], self.parity, y.device)
            s, t = self._shift_scale(y * keep, keep)
            return y * (-s).exp() - t
        fixed, changed = self._halves(y)
        s, t = self._shift_scale(fixed)
        return self._join(fixed, changed * (-s).exp() - t)


class RealNVPScale(nn.Module):
    """One scale: 3 checkerboard couplings, a squeeze, 3 channel-wise couplings, then half of the squeezed
    tensor goes to the next scale (at half the resolution, twice the channels). The last scale is 4 checkerboard
    couplings, as in srVAE's (and Chris Chute's) RealNVP. Every s/t network has the same growth rate and steps,
    as in srVAE (Chute's doubles the width at each scale)."""

    def __init__(self, channels: int, scales_left: int, growth: int, steps: int):
        super().__init__()
        last = scales_left == 1
        self.checkerboards = nn.ModuleList(Coupling(channels, "checkerboard", i % 2, growth, steps)
                                           for i in range(4 if last else 3))
        if not last:
            self.channelwise = nn.ModuleList(Coupling(4 * channels, "channel", i % 2, growth, steps)
                                             for i in range(3))
            self.next = RealNVPScale(2 * channels, scales_left - 1, growth, steps)
        self.last = last

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_det = x.new_zeros(len(x))
        for coupling in self.checkerboards:
            x, ld = coupling(x)
            log_det = log_det + ld
        if self.last:
            return x, log_det
        x = squeeze(x)
        for coupling in self.channelwise:
            x, ld = coupling(x)
            log_det = log_det + ld
        b, c4, h, w = x.shape
        patches = x.view(b, c4 // 4, 4, h, w)  # channel c, patch position p, at 4c + p
        kept, ld = self.next(patches[:, :, KEEP].reshape(b, c4 // 2, h, w))
        return unsqueeze(_merge(kept, patches[:, :, FACTOR_OUT])), log_det + ld

    def inverse(self, y: Tensor) -> Tensor:
        if not self.last:
            x = squeeze(y)
            b, c4, h, w = x.shape
            patches = x.view(b, c4 // 4, 4, h, w)
            kept = self.next.inverse(patches[:, :, KEEP].reshape(b, c4 // 2, h, w))
            x = _merge(kept, patches[:, :, FACTOR_OUT])
            for coupling in reversed(self.channelwise):
                x = coupling.inverse(x)
            y = unsqueeze(x)
        for coupling in reversed(self.checkerboards):
            y = coupling.inverse(y)
        return y


def _merge(kept: Tensor, factored: Tensor) -> Tensor:
    """Put the kept positions (B x 2C' x h x w) and the factored-out ones (B x C' x 2 x h x w) back into a
    squeezed tensor B x 4C' x h x w, each at its patch position."""
    b, _, h, w = kept.shape
    patches = kept.new_empty(b, factored.shape[1], 4, h, w)
    patches[:, :, KEEP] = kept.view(b, -1, 2, h, w)
    patches[:, :, FACTOR_OUT] = factored
    return patches.view(b, -1, h, w)


class RealNVP(nn.Module):
    """The bijective prior of the paper (Gatopoulos & Tomczak, §2.2; the book's eq-realnvp) on latents of shape
C x H x W.

    srVAE: 2 scales on 16 x 8 x 8, s/t networks of growth 64 and 5 steps. With `scales` > 1, H and W must be
    divisible by 2^(scales-1).
    """

    def __init__(self, shape: tuple[int, int, int], scales: int = 2, growth: int = 64, steps: int = 5):
        super().__init__()
        self.shape = tuple(shape)
        c, h, w = self.shape
        if scales < 1:
            raise ValueError(f"RealNVP needs at least one scale, got {scales}")
        if h % 2 ** (scales - 1) or w % 2 ** (scales - 1):
            raise ValueError(f"{scales} scales squeeze {h} x {w} latents {scales - 1} times: H and W must be "
                             f"divisible by {2 ** (scales - 1)}")
        self.flow = RealNVPScale(c, scales, growth, steps)

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """v = f(u) and log|det df/du| per sample."""
        return self.flow(u)

    def inverse(self, v: Tensor) -> Tensor:
        return self.flow.inverse(v)

    def log_prob(self, u: Tensor) -> Tensor:
        v, log_det = self.flow(u)
        return standard_normal_log_prob(v) + log_det

    def sample(self, n: int, device: torch.device | str | None = None) -> Tensor:
        weight = next(self.parameters())
        return self.inverse(torch.randn(n, *self.shape, device=device or weight.device, dtype=weight.dtype))


def make_prior(name: str, shape: tuple[int, int, int], **options) -> nn.Module:
    """A prior by name: "standard_normal", "mog" (options: components), "realnvp" (scales, growth, steps)."""
    kinds = {"standard_normal": StandardNormal, "mog": MixtureOfGaussians, "realnvp": RealNVP}
    if name not in kinds:
        raise ValueError(f"unknown prior {name!r}; the priors are {sorted(kinds)}")
    return kinds[name](shape, **options)
