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


def check_unit_range(x: Tensor) -> None:
    """The objectives model pixels in [0,1]; 8-bit images (0..255) would make every term meaningless."""
    low, high = torch.aminmax(x.detach())
    if low < 0 or high > 1:
        raise ValueError(f"images must lie in [0,1], found values in [{float(low):.3g}, {float(high):.3g}]"
                         + (" (8-bit images? divide by 255)" if high > 1.5 else ""))


def _check_beta(beta: float) -> None:
    if not beta >= 0:  # also NaN
        raise ValueError(f"beta must be >= 0 (a negative KL weight rewards moving away from the prior), got {beta}")


class GammaBalance:
    """gamma as the Split-VAE code computes it (book: eq-gamma): a running mean of the per-pixel MSE, never rising.

        mse_run <- 0.99 mse_run + 0.01 mse_batch;   gamma <- min(mse_run, gamma)

    Dividing the squared error by 2 gamma makes gamma play the decoder variance; since L_rec/gamma + beta L_KL is
    proportional to L_rec + beta gamma L_KL, the *effective* KL weight beta*gamma shrinks as reconstructions improve.
    This is the Split-VAE code's variant of Asperti & Trentin's balancing: theirs clamps the running mean itself
    (mse <- min(mse, 0.99 mse + 0.01 mse_batch)), uses its square root as the decoder's standard deviation, adds
    the D log gamma term of the Gaussian likelihood, and weights the KL by (2 D / L)^2 instead of an explicit beta.
    """

    def __init__(self, initial: float = 1.0, decay: float = 0.99):
        # Tensors, updated on the device: a Python float here would make every training step wait for the GPU.
        self.mse_run = self.gamma = torch.tensor(float(initial))
        self.decay = decay

    def update(self, batch_mse: Tensor | float) -> None:
        batch_mse = torch.as_tensor(batch_mse, dtype=torch.float32).detach()
        self.mse_run = self.decay * self.mse_run.to(batch_mse.device) + (1 - self.decay) * batch_mse
        self.gamma = torch.minimum(self.mse_run, self.gamma.to(batch_mse.device))

    def state_dict(self) -> dict:
        return {"mse_run": float(self.mse_run), "gamma": float(self.gamma), "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.mse_run, self.gamma = torch.tensor(state["mse_run"]), torch.tensor(state["gamma"])
        self.decay = state["decay"]


class BalancedGaussianELBO:
    r"""The Split-VAE training loss (book: eq-balanced; Asperti et al. 2022, Sec. 3), averaged over the batch:

        L = 1/B sum_b [ SSE_b / (2 gamma)  +  beta * KL(q(z|x_b) || p(z)) ]
    """

    def __init__(self, beta: float = 1.0, gamma: GammaBalance | None = None):
        _check_beta(beta)
        self.beta = beta
        self.balance = gamma or GammaBalance()
        self._checked = False

    def __call__(self, model, x: Tensor) -> dict[str, Tensor]:
        if not self._checked:  # the first batch only: a check on every step would stall a GPU for nothing
            check_unit_range(x)
            self._checked = True
        out = model(x)
        sse, kl = squared_error(x, out.x_hat), gaussian_kl(out.mu, out.logvar)
        rec = sse.mean() / (2 * self.balance.gamma)
        kl = kl.mean()
        return {"loss": rec + self.beta * kl, "rec": rec, "kl": kl,
                "mse": sse.mean().detach() / x[0].numel(), "gamma": self.balance.gamma}

    def update(self, terms: dict[str, Tensor]) -> None:
        self.balance.update(terms["mse"])

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
        _check_beta(beta)
        self.beta = beta
        self._checked = False

    def __call__(self, model, x: Tensor) -> dict[str, Tensor]:
        if not self._checked:
            check_unit_range(x)
            self._checked = True
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
# The likelihood of the self-supervised VAE (book: eq-dmol; Gatopoulos & Tomczak, Sec. 3): every pixel of an 8-bit
# image in [0,1] is a mixture of K logistics, each integrated over the pixel's bin. Level k/255 owns [k/255 - b/2, k/255 + b/2] with b = 1/255;
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


# ---------------------------------------------------------------- "How to train your VAE" (Rivera, Sec. 2)
# As the original code computes its loss. The original works on images in [-1, 1]: the objectives below map x to
# 2x - 1 and compare it with the decoder's linear output (`x_hat_signed` of vaelab.how_to_train_your_vae).


def mean_absolute_error(x: Tensor, x_hat: Tensor) -> Tensor:
    r"""1/D sum_{h,w,c} |x - x_hat| per image; its batch mean is Keras' MeanAbsoluteError, the original's L1."""
    return (x - x_hat).abs().flatten(1).mean(-1)


def global_kl(mu: Tensor) -> Tensor:
    r"""The KL of the batch's Gaussian of posterior means against the prior, one number a batch (eq-global-kl):

        m_j = 1/B sum_b mu_bj,   s_j^2 = 1/B sum_b (mu_bj - m_j)^2        (biased, as tf.math.reduce_variance)
        KL( N(m, diag s^2) || N(0, I) ) = 1/2 sum_j (m_j^2 + s_j^2 - log s_j^2 - 1)

    The aggregate posterior q(z) = 1/N sum_i N(mu_i, sigma_i^2) is a Gaussian mixture; this term asks the spread
    of its component means, summarised by their mean and variance, to look like N(0, I). It ignores sigma.
    """
    m, s2 = mu.mean(0), mu.var(0, unbiased=False)
    return 0.5 * (m**2 + s2 - s2.log() - 1).sum()


def variance_regulariser(logvar: Tensor) -> Tensor:
    r"""sum_j (sigma_j^2 - log sigma_j^2 - 1) per image: twice the variance part of the usual KL, with no mu^2.

    Its derivative in log sigma_j^2 is sigma_j^2 - 1: negative while sigma_j^2 < 1, so gradient descent pushes a
    collapsing variance back up towards 1. The original weights it 0.1 (code: -0.1 (1 + log s^2 - s^2)).
    """
    return (logvar.exp() - logvar - 1).sum(-1)


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    r"""BCE(D(x), 1) + BCE(D(x_hat), 0), each a mean over every patch logit of the batch (Keras' reduction)."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_adversarial_loss(fake_logits: Tensor) -> Tensor:
    r"""BCE(D(x_hat), 1) = mean softplus(-D(x_hat)): the decoder gains where D takes its patches for real ones."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def posterior_diagnostics(mu: Tensor, logvar: Tensor) -> dict[str, Tensor]:
    """What the chapter watches during training, averaged over latents: the batch's m_j^2 and s_j^2 (N(0, I)
    wants 0 and 1) and the posterior variances sigma^2 (their collapse is what the regulariser prevents)."""
    return {"batch_mean2": (mu.mean(0) ** 2).mean().detach(), "batch_var": mu.var(0, unbiased=False).mean().detach(),
            "sigma2": logvar.exp().mean().detach()}


class HowToTrainLoss:
    r"""Rivera's objective, as the original's `VAE_GAN.train_step` computes it, every weight an option:

        L_G = w_rec MAE(x, x_hat) + w_glob KL(N(m, s^2) || N(0, I)) + w_ind 1/B sum_b sum_j (sigma^2 - log sigma^2 - 1)
              + w_adv BCE(D(x_hat), 1)
        L_D = w_adv [BCE(D(x), 1) + BCE(D(x_hat), 0)]

    with x and x_hat on the [-1, 1] scale. adversary: the PatchGAN D (`vaelab.how_to_train_your_vae.patchgan`), or
    None to train without it (w_adv is then unused). `fit` updates the VAE on L_G and D on L_D on every batch, both
    from this one forward pass: the original's simultaneous steps, each Adam(1e-4, beta_1=0.5) there.
    """

    def __init__(self, adversary: torch.nn.Module | None = None, *, reconstruction_weight: float = 5000.0,
                 global_weight: float = 1.0, variance_weight: float = 0.1, adversarial_weight: float = 100.0,
                 adversary_lr: float = 1e-4, adversary_betas: tuple[float, float] = (0.5, 0.999)):
        self.adversary = adversary
        self.weights = {"reconstruction": reconstruction_weight, "global": global_weight,
                        "variance": variance_weight, "adversarial": adversarial_weight}
        self.adversary_lr, self.adversary_betas = adversary_lr, tuple(adversary_betas)

    def __call__(self, model, x: Tensor) -> dict[str, Tensor]:
        out, w = model(x), self.weights
        x_signed = 2 * x - 1
        mae = mean_absolute_error(x_signed, out.x_hat_signed).mean()
        glob = global_kl(out.mu)
        individual = variance_regulariser(out.logvar).mean()
        loss = w["reconstruction"] * mae + w["global"] * glob + w["variance"] * individual
        terms = {"mae": mae.detach(), "global_kl": glob.detach(), "variance_reg": individual.detach(),
                 **posterior_diagnostics(out.mu, out.logvar)}
        if self.adversary is not None:
            # D sees the real and the generated batch in two calls, as the original. Its batch norm runs in
            # inference mode there (vaelab.nn.resnet_v2), so the calls do not normalise each batch on its own.
            # The one D(x_hat) serves both losses: fit takes L_G's gradient in the VAE's weights only and L_D's in
            # D's only, so no detach is needed.
            real_logits, fake_logits = self.adversary(x_signed), self.adversary(out.x_hat_signed)
            adversarial = generator_adversarial_loss(fake_logits)
            loss = loss + w["adversarial"] * adversarial
            terms["adversarial"] = adversarial.detach()
            terms["adversary_loss"] = w["adversarial"] * discriminator_loss(real_logits, fake_logits)
        return {"loss": loss, **terms}

    def update(self, terms: dict[str, Tensor]) -> None:
        pass  # the adversary is trained by fit; nothing else is learned outside the networks

    def settings(self) -> dict:
        adversary = None if self.adversary is None else type(self.adversary).__name__
        return {**{f"{name}_weight": value for name, value in self.weights.items()}, "adversary": adversary,
                "adversary_lr": self.adversary_lr, "adversary_betas": list(self.adversary_betas)}

    def state_dict(self) -> dict:
        return {"weights": dict(self.weights)}

    def load_state_dict(self, state: dict) -> None:
        self.weights = dict(state["weights"])


class HowNotToTrainLoss:
    r"""The original's baseline (its `HowNOT_ToTrainYourVAE` notebook): the same network, the standard KL, L1:

        L = w_rec MAE(x, x_hat) + w_kl 1/B sum_b KL(q(z|x_b) || N(0, I))      (w_rec = 5000, w_kl = 1)
    """

    def __init__(self, *, reconstruction_weight: float = 5000.0, kl_weight: float = 1.0):
        self.weights = {"reconstruction": reconstruction_weight, "kl": kl_weight}

    def __call__(self, model, x: Tensor) -> dict[str, Tensor]:
        out, w = model(x), self.weights
        mae = mean_absolute_error(2 * x - 1, out.x_hat_signed).mean()
        kl = gaussian_kl(out.mu, out.logvar).mean()
        return {"loss": w["reconstruction"] * mae + w["kl"] * kl, "mae": mae.detach(), "kl": kl.detach(),
                **posterior_diagnostics(out.mu, out.logvar)}

    def update(self, terms: dict[str, Tensor]) -> None:
        pass

    def settings(self) -> dict:
        return {f"{name}_weight": value for name, value in self.weights.items()}

    def state_dict(self) -> dict:
        return {"weights": dict(self.weights)}

    def load_state_dict(self, state: dict) -> None:
        self.weights = dict(state["weights"])
