"""Every loss term in vaelab, each beside the equation it computes. All per-image functions return a tensor of
shape (N,), summed over pixels or latent dimensions, so that callers choose how to average.

An *objective* bundles terms into what `vaelab.train.fit` minimises: calling it on (model, x) returns a dict of
scalar terms whose "loss" entry is minimised; `update` runs after each optimiser step; its state (e.g. gamma)
is saved in checkpoints through `state_dict`/`load_state_dict`; `settings()` names the hyper-parameters that
define the run (what a resumed run must share with the run it continues).
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    r"""KL(N(mu, sigma^2) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)."""
    return 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1)


def squared_error(x: Tensor, x_hat: Tensor) -> Tensor:
    r"""sum_{h,w,c} (x - x_hat)^2 per image."""
    return ((x - x_hat) ** 2).flatten(1).sum(-1)


def gaussian_nll(x: Tensor, x_hat: Tensor, variance: float | Tensor) -> Tensor:
    r"""-log N(x; x_hat, gamma I) = SSE / (2 gamma) + D/2 log(2 pi gamma), per image."""
    dims = x[0].numel()
    variance = torch.as_tensor(variance, dtype=x.dtype, device=x.device)
    return squared_error(x, x_hat) / (2 * variance) + 0.5 * dims * torch.log(2 * math.pi * variance)


def bernoulli_nll(x: Tensor, probs: Tensor) -> Tensor:
    r"""-log Bernoulli(x; p) = -sum [x log p + (1 - x) log(1 - p)] per image (x may be grey levels in [0,1])."""
    return F.binary_cross_entropy(probs, x, reduction="none").flatten(1).sum(-1)


class GammaBalance:
    """gamma as the Split-VAE code computes it (spec 1.3): a running mean of the per-pixel MSE, never increasing.

        mse_run <- 0.99 mse_run + 0.01 mse_batch;   gamma <- min(mse_run, gamma)

    Dividing the squared error by 2 gamma makes gamma play the decoder variance; since L_rec/gamma + beta L_KL is
    proportional to L_rec + beta gamma L_KL, the *effective* KL weight beta*gamma shrinks as reconstructions improve.
    This is the Split-VAE code's variant of Asperti & Trentin's balancing: theirs clamps the running mean itself
    (mse <- min(mse, 0.99 mse + 0.01 mse_batch)), uses its square root as the decoder's standard deviation, adds
    the D log gamma term of the Gaussian likelihood, and weights the KL by (2 D / L)^2 instead of an explicit beta.
    """

    def __init__(self, initial: float = 1.0, decay: float = 0.99):
        self.mse_run = self.gamma = float(initial)
        self.decay = decay

    def update(self, batch_mse: float) -> None:
        self.mse_run = self.decay * self.mse_run + (1 - self.decay) * batch_mse
        self.gamma = min(self.mse_run, self.gamma)

    def state_dict(self) -> dict:
        return {"mse_run": self.mse_run, "gamma": self.gamma, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.mse_run, self.gamma, self.decay = state["mse_run"], state["gamma"], state["decay"]


class BalancedGaussianELBO:
    r"""The Split-VAE training loss (spec 1.3), averaged over the batch:

        L = 1/B sum_b [ SSE_b / (2 gamma)  +  beta * KL(q(z|x_b) || p(z)) ]
    """

    def __init__(self, beta: float = 1.0, gamma: GammaBalance | None = None):
        self.beta = beta
        self.balance = gamma or GammaBalance()

    def __call__(self, model, x: Tensor) -> dict[str, Tensor]:
        out = model(x)
        sse, kl = squared_error(x, out.x_hat), gaussian_kl(out.mu, out.logvar)
        rec = sse.mean() / (2 * self.balance.gamma)
        kl = kl.mean()
        return {"loss": rec + self.beta * kl, "rec": rec, "kl": kl,
                "mse": sse.mean().detach() / x[0].numel(), "gamma": torch.tensor(self.balance.gamma)}

    def update(self, terms: dict[str, Tensor]) -> None:
        self.balance.update(float(terms["mse"]))

    def settings(self) -> dict:
        return {"beta": self.beta, "gamma_decay": self.balance.decay}

    def state_dict(self) -> dict:
        return {"beta": self.beta, "gamma": self.balance.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.beta = state["beta"]
        self.balance.load_state_dict(state["gamma"])


class BernoulliELBO:
    r"""The classic VAE loss for images in [0,1]: L = 1/B sum_b [ -log p(x_b|z_b) + beta KL(q(z|x_b) || p(z)) ]."""

    def __init__(self, beta: float = 1.0):
        self.beta = beta

    def __call__(self, model, x: Tensor) -> dict[str, Tensor]:
        out = model(x)
        rec, kl = bernoulli_nll(x, out.x_hat).mean(), gaussian_kl(out.mu, out.logvar).mean()
        return {"loss": rec + self.beta * kl, "rec": rec, "kl": kl,
                "mse": squared_error(x, out.x_hat).mean().detach() / x[0].numel()}

    def update(self, terms: dict[str, Tensor]) -> None:
        pass  # nothing is learned outside the network

    def settings(self) -> dict:
        return {"beta": self.beta}

    def state_dict(self) -> dict:
        return {"beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        self.beta = state["beta"]


# ---------------------------------------------------------------- the discretized logistic mixture (PixelCNN++)
# The likelihood of the self-supervised VAE (spec 2.4): every pixel of an 8-bit image in [0,1] is a mixture of K
# logistics, each integrated over the pixel's bin. Level k/255 owns [k/255 - b/2, k/255 + b/2] with b = 1/255;
# the two end bins stretch to -inf and +inf, so the 256 probabilities of a pixel sum to 1.

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
    return torch.stack([means[:, :, 0],
                        means[:, :, 1] + coeffs[:, :, 0] * red,
                        means[:, :, 2] + coeffs[:, :, 1] * red + coeffs[:, :, 2] * green], dim=2)


def dmol_pixel_log_prob(x: Tensor, params: Tensor, n_mix: int) -> Tensor:
    r"""log p(x_ij) for every pixel of 8-bit images x (B x C x H x W in [0,1]): a tensor B x H x W.

    With s = e^{log s}, x_pm = (x - mu +- b/2) / s and sigma the logistic CDF, a channel value's probability is

        interior bins             log[sigma(x_+) - sigma(x_-)]
        x = 0    (x < b/2)        log sigma(x_+)              = x_+ - softplus(x_+)
        x = 1    (x > 1 - b/2)    log[1 - sigma(x_-)]         = -softplus(x_-)
        tiny bins (< 1e-5)        log[density at x * b]       = x_in - log s - 2 softplus(x_in) + log b,  x_in = (x-mu)/s

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
