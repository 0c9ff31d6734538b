"""The densities every model samples and scores, each log density beside its equation: the diagonal Gaussian of an
encoder (`normal_log_prob`, and `reparameterize` to sample it), the standard normal (`standard_normal_log_prob`),
and the discretized logistic mixture over 8-bit pixels of the self-supervised VAE (`dmol_log_prob`, `dmol_sample`).
Each log density is per image: a tensor (N,), summed over every dimension but the first.

The objectives that combine them are in `vaelab.losses`; the learned priors (mixture, RealNVP) in `vaelab.priors`.
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------- Gaussians


def reparameterize(mu: Tensor, logvar: Tensor) -> Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): a sample of N(mu, diag sigma^2) differentiable in mu and sigma."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def normal_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag sigma^2) = -1/2 sum_j [(z_j - mu_j)^2 / sigma_j^2 + log sigma_j^2 + log 2 pi]."""
    return -0.5 * ((z - mu) ** 2 / logvar.exp() + logvar + LOG_2PI).flatten(1).sum(1)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) = -1/2 sum_j (z_j^2 + log 2 pi)."""
    return -0.5 * (z**2 + LOG_2PI).flatten(1).sum(1)


# ---------------------------------------------------------------- the discretized logistic mixture (PixelCNN++)
# The likelihood of the self-supervised VAE (book: eq-dmol; Gatopoulos & Tomczak, Sec. 3): every pixel of an 8-bit
# image in [0,1] is a mixture of K logistics, each integrated over the pixel's bin. Level k/255 owns
# [k/255 - b/2, k/255 + b/2] with b = 1/255; the two end bins stretch to -inf and +inf, so the 256 probabilities of
# a pixel sum to 1.

DMOL_BIN = 1 / 255
DMOL_MIN_LOG_SCALE = -7.0  # the srVAE code's clamp: scales below e^-7 = 0.0009 (a quarter bin) are not used
DMOL_TINY_BIN = 1e-5  # below this bin probability, sigma(x+) - sigma(x-) is mostly rounding error


def dmol_channels(channels: int, n_mix: int) -> int:
    """Decoder outputs per pixel: K mixture logits, C K means, C K log-scales, and for colour 3 K coefficients."""
    if channels not in (1, 3):
        raise ValueError(f"the discretized logistic mixture models 1 or 3 channels, got {channels}")
    return n_mix * (1 + 2 * channels + (3 if channels == 3 else 0))


def dmol_unpack(params: Tensor, channels: int, n_mix: int) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """params B x dmol_channels x H x W -> log pi (B,K,H,W); means, log-scales (B,K,C,H,W); coefficients or None.

    The layout is srVAE's: [logits | means | log-scales | coefficients], each block component-major.
    """
    expected = dmol_channels(channels, n_mix)
    if params.dim() != 4 or params.shape[1] != expected:
        raise ValueError(f"{channels} channels and {n_mix} components need B x {expected} x H x W parameters, "
                         f"got {tuple(params.shape)}")
    b, _, h, w = params.shape
    k = n_mix
    log_pi = F.log_softmax(params[:, :k], dim=1)  # pi = softmax(logits)
    means = params[:, k:k + channels * k].reshape(b, k, channels, h, w)
    log_scales = params[:, k + channels * k:k + 2 * channels * k].reshape(b, k, channels, h, w)
    log_scales = log_scales.clamp(min=DMOL_MIN_LOG_SCALE)
    coeffs = torch.tanh(params[:, k + 2 * channels * k:].reshape(b, k, 3, h, w)) if channels == 3 else None
    return log_pi, means, log_scales, coeffs


def couple_means(means: Tensor, coeffs: Tensor | None, x: Tensor) -> Tensor:
    r"""PixelCNN++'s colour coupling: mu_G' = mu_G + c_0 x_R,  mu_B' = mu_B + c_1 x_R + c_2 x_G.

    means, coeffs: B x K x C x H x W (one set per component); x: B x 1 x C x H x W (the pixel's own values).
    """
    if coeffs is None:
        return means
    red, green = x[:, :, 0], x[:, :, 1]
    coupled = (means[:, :, 0],
               means[:, :, 1] + coeffs[:, :, 0] * red,
               means[:, :, 2] + coeffs[:, :, 1] * red + coeffs[:, :, 2] * green)
    return torch.stack(torch.broadcast_tensors(*coupled), dim=2)  # parameters may broadcast over many values


def dmol_pixel_log_prob(x: Tensor, params: Tensor, n_mix: int) -> Tensor:
    r"""log p(x_ij) for every pixel of 8-bit images x (B x C x H x W in [0,1]): a tensor B x H x W.

    With s = e^{log s}, x_pm = (x - mu +- b/2) / s and sigma the logistic CDF, a channel value's probability is

        interior bins             log[sigma(x_+) - sigma(x_-)]
        x = 0    (x < b/2)        log sigma(x_+)              = x_+ - softplus(x_+)
        x = 1    (x > 1 - b/2)    log[1 - sigma(x_-)]         = -softplus(x_-)
        tiny bins (< 1e-5)        log[density at x * b]       = x_in - log s - 2 softplus(x_in) + log b,
                                                                with x_in = (x - mu) / s

    and log p(pixel) = logsumexp_k [log pi_k + sum_c log P(x_c | k)]  (the channels of a component multiply).
    """
    log_pi, means, log_scales, coeffs = dmol_unpack(params, x.shape[1], n_mix)
    x = x.unsqueeze(1)  # B x 1 x C x H x W, against K components
    centred = x - couple_means(means, coeffs, x)
    inv_s = torch.exp(-log_scales)
    plus, minus = inv_s * (centred + DMOL_BIN / 2), inv_s * (centred - DMOL_BIN / 2)
    bin_probability = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv_s * centred
    log_density_times_bin = mid - log_scales - 2 * F.softplus(mid) + math.log(DMOL_BIN)
    log_bin = torch.where(bin_probability > DMOL_TINY_BIN, torch.log(bin_probability.clamp(min=1e-12)),
                          log_density_times_bin)
    log_p = torch.where(x < DMOL_BIN / 2, plus - F.softplus(plus),  # the bottom bin: (-inf, b/2]
                        torch.where(x > 1 - DMOL_BIN / 2, -F.softplus(minus),  # the top bin: [1 - b/2, inf)
                                    log_bin))
    return torch.logsumexp(log_pi + log_p.sum(2), dim=1)


def dmol_log_prob(x: Tensor, params: Tensor, n_mix: int) -> Tensor:
    """log p(x) per image, shape (N,): the pixels' log-probabilities summed."""
    return dmol_pixel_log_prob(x, params, n_mix).flatten(1).sum(1)


def dmol_sample(params: Tensor, channels: int, n_mix: int, how: str = "argmax") -> Tensor:
    r"""8-bit images B x C x H x W drawn from the mixture, channel after channel (R, then G given R, ...).

    how = "argmax": the srVAE code's way, the most probable component and its (coupled) mean, no noise;
          "sample": a component drawn from pi (Gumbel-max), then x = mu + s log(v / (1 - v)), v ~ U(0,1), the
                    logistic's inverse CDF. Both are rounded to the nearest level k/255 (srVAE keeps the argmax
                    mean unrounded; rounding keeps every image, and every y fed to the next level, 8-bit).
    """
    if how not in ("argmax", "sample"):
        raise ValueError(f"how must be 'argmax' or 'sample', got {how!r}")
    log_pi, means, log_scales, coeffs = dmol_unpack(params, channels, n_mix)
    if how == "sample":
        log_pi = log_pi - torch.log(-torch.log(torch.rand_like(log_pi).clamp(1e-10, 1 - 1e-10)))  # + Gumbel noise
    pick = log_pi.argmax(1, keepdim=True).unsqueeze(2)  # B x 1 x 1 x H x W: one component per pixel

    def chosen(t: Tensor) -> Tensor:
        return t.gather(1, pick.expand(-1, 1, t.shape[2], -1, -1)).squeeze(1)

    mu, log_s = chosen(means), chosen(log_scales)
    if how == "sample":
        v = torch.rand_like(mu).clamp(1e-5, 1 - 1e-5)
        mu = mu + log_s.exp() * (torch.log(v) - torch.log1p(-v))
    if channels == 1:
        return _to_level(mu)
    c = chosen(coeffs)
    red = _to_level(mu[:, 0])  # green and blue are coupled to the values actually drawn, as in the likelihood
    green = _to_level(mu[:, 1] + c[:, 0] * red)
    blue = _to_level(mu[:, 2] + c[:, 1] * red + c[:, 2] * green)
    return torch.stack([red, green, blue], 1)


def _to_level(x: Tensor) -> Tensor:
    return torch.round(x.clamp(0, 1) * 255) / 255
