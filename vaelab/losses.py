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
