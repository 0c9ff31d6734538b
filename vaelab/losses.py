"""Every loss term in vaelab, each beside the equation it computes, and the objectives that `vaelab.train.fit`
minimises (`Objective`). All per-image functions return a tensor of shape (N,), summed over pixels or latent
dimensions, so that callers choose how to average. The densities the terms score with are in
`vaelab.distributions`.
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .images import check_unit_range


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


def _check_beta(beta: float) -> None:
    if not beta >= 0:  # also NaN
        raise ValueError(f"beta must be >= 0 (a negative KL weight rewards moving away from the prior), got {beta}")


class Objective:
    """What `vaelab.train.fit` minimises, one contract for every paper.

    Calling it on (model, x) checks the first batch's pixel range once, then returns `terms(model, x)`: a dict of
    scalar terms whose "loss" entry is minimised. `update(terms)` runs after each optimiser step; `settings()` names
    the hyper-parameters that define the run (what a resumed run must share with the run it continues);
    `state_dict`/`load_state_dict` carry what the objective itself learns (the Split-VAE's gamma) in checkpoints.
    The defaults are those of an objective that learns nothing outside the networks and has no settings.
    """

    _checked = False

    def __call__(self, model, x: Tensor) -> dict[str, Tensor]:
        if not self._checked:  # the first batch only: a check on every step would stall a GPU for nothing
            check_unit_range(x)
            self._checked = True
        return self.terms(model, x)

    def terms(self, model, x: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def update(self, terms: dict[str, Tensor]) -> None:
        pass

    def settings(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


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


class BalancedGaussianELBO(Objective):
    r"""The Split-VAE training loss (book: eq-balanced; Asperti et al. 2022, Sec. 3), averaged over the batch:

        L = 1/B sum_b [ SSE_b / (2 gamma)  +  beta * KL(q(z|x_b) || p(z)) ]
    """

    def __init__(self, beta: float = 1.0, gamma: GammaBalance | None = None):
        _check_beta(beta)
        self.beta = beta
        self.balance = gamma or GammaBalance()

    def terms(self, model, x: Tensor) -> dict[str, Tensor]:
        out = model(x)
        sse, kl = squared_error(x, out.x_hat), gaussian_kl(out.mu, out.logvar).mean()
        rec = sse.mean() / (2 * self.balance.gamma)
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


class BernoulliELBO(Objective):
    r"""The classic VAE loss for images in [0,1]: L = 1/B sum_b [ -log p(x_b|z_b) + beta KL(q(z|x_b) || p(z)) ]."""

    def __init__(self, beta: float = 1.0):
        _check_beta(beta)
        self.beta = beta

    def terms(self, model, x: Tensor) -> dict[str, Tensor]:
        out = model(x)
        rec, kl = bernoulli_nll(x, out.x_hat).mean(), gaussian_kl(out.mu, out.logvar).mean()
        return {"loss": rec + self.beta * kl, "rec": rec, "kl": kl,
                "mse": squared_error(x, out.x_hat).mean().detach() / x[0].numel()}

    def settings(self) -> dict:
        return {"beta": self.beta}

    def state_dict(self) -> dict:
        return {"beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        self.beta = state["beta"]


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


class _WeightedTerms(Objective):
    """An objective whose hyper-parameters and state are its terms' weights, `self.weights` by term name."""

    weights: dict[str, float]

    def settings(self) -> dict:
        return {f"{name}_weight": value for name, value in self.weights.items()}

    def state_dict(self) -> dict:
        return {"weights": dict(self.weights)}

    def load_state_dict(self, state: dict) -> None:
        self.weights = dict(state["weights"])


class HowToTrainLoss(_WeightedTerms):
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

    def terms(self, model, x: Tensor) -> dict[str, Tensor]:
        out, w = model(x), self.weights
        x_signed = 2 * x - 1
        mae = mean_absolute_error(x_signed, out.x_hat_signed).mean()
        glob = global_kl(out.mu)
        individual = variance_regulariser(out.logvar).mean()
        loss = w["reconstruction"] * mae + w["global"] * glob + w["variance"] * individual
        reported = {"mae": mae.detach(), "global_kl": glob.detach(), "variance_reg": individual.detach(),
                    **posterior_diagnostics(out.mu, out.logvar)}
        if self.adversary is not None:
            # D sees the real and the generated batch in two calls, as the original. Its batch norm runs in
            # inference mode there (vaelab.nn.resnet_v2), so the calls do not normalise each batch on its own.
            # The one D(x_hat) serves both losses: fit takes L_G's gradient in the VAE's weights only and L_D's in
            # D's only, so no detach is needed.
            real_logits, fake_logits = self.adversary(x_signed), self.adversary(out.x_hat_signed)
            adversarial = generator_adversarial_loss(fake_logits)
            loss = loss + w["adversarial"] * adversarial
            reported["adversarial"] = adversarial.detach()
            reported["adversary_loss"] = w["adversarial"] * discriminator_loss(real_logits, fake_logits)
        return {"loss": loss, **reported}  # the adversary is trained by fit

    def settings(self) -> dict:
        adversary = None if self.adversary is None else type(self.adversary).__name__
        return {**super().settings(), "adversary": adversary, "adversary_lr": self.adversary_lr,
                "adversary_betas": list(self.adversary_betas)}


class HowNotToTrainLoss(_WeightedTerms):
    r"""The original's baseline (its `HowNOT_ToTrainYourVAE` notebook): the same network, the standard KL, L1:

        L = w_rec MAE(x, x_hat) + w_kl 1/B sum_b KL(q(z|x_b) || N(0, I))      (w_rec = 5000, w_kl = 1)
    """

    def __init__(self, *, reconstruction_weight: float = 5000.0, kl_weight: float = 1.0):
        self.weights = {"reconstruction": reconstruction_weight, "kl": kl_weight}

    def terms(self, model, x: Tensor) -> dict[str, Tensor]:
        out, w = model(x), self.weights
        mae = mean_absolute_error(2 * x - 1, out.x_hat_signed).mean()
        kl = gaussian_kl(out.mu, out.logvar).mean()
        return {"loss": w["reconstruction"] * mae + w["kl"] * kl, "mae": mae.detach(), "kl": kl.detach(),
                **posterior_diagnostics(out.mu, out.logvar)}


# ---------------------------------------------------------------- the self-supervised VAE (Gatopoulos & Tomczak)


class SelfSupervisedELBO(Objective):
    """The negative ELBO of `vaelab.self_supervised_vae.SelfSupervisedVAE` in nats per image, averaged over the
    batch (srVAE's nelbo): the paper's bound has no weights to choose, and nothing outside the networks is learned.

    The terms it reports, per image: re_x = -log p(x | y_K, z_K), re_y = -sum of the other levels' log p, kl_u,
    kl_z, and bpd = nelbo / (D ln 2) with D the dimensions of x only, as srVAE and the paper report it (y is a
    function of x, so log p(x) >= log p(x, d(x)) >= ELBO and this is a bound on x's bits).
    """

    def terms(self, model, x: Tensor) -> dict[str, Tensor]:
        out = model.infer(x)
        loss = -out.elbo.mean()
        return {"loss": loss, "bpd": loss.detach() / (model.dims * math.log(2)),
                "re_x": -out.re_x.mean().detach(), "re_y": -out.re_y.mean().detach(),
                "kl_u": out.kl_u.mean().detach(), "kl_z": out.kl_z.mean().detach()}
