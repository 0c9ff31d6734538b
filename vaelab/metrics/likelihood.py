"""Log-likelihood: the ELBO and the importance-weighted bound, per image, and bits per dimension."""
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..losses import bernoulli_nll, gaussian_nll
from ..train import dry_run_cap
from ..vae import Encoder
from .latents import model_device


LogLikelihood = Callable[[Tensor, Tensor], Tensor]  # (x, x_hat) -> log p(x|z) per image, shape (N,)


def gaussian_log_likelihood(variance: float) -> LogLikelihood:
    """log N(x; x_hat, gamma I): the decoder of the balanced VAE, whose variance is the final gamma."""
    return lambda x, x_hat: -gaussian_nll(x, x_hat, variance)


def bernoulli_log_likelihood(x: Tensor, x_hat: Tensor) -> Tensor:
    return -bernoulli_nll(x, x_hat)


class LikelihoodBounds(NamedTuple):
    elbo: Tensor  # (N,) nats: the mean of the K log-weights, an unbiased estimate of the ELBO
    iwae: Tensor  # (N,) nats: log (1/K) sum_k w_k, the importance-weighted bound, >= elbo for every image


@torch.no_grad()
def log_likelihood_bounds(model: nn.Module, images: Tensor, log_likelihood: LogLikelihood | None = None, k: int = 1,
                          *, batch_size: int = 500, device: str | torch.device | None = None,
                          progress: bool = False) -> LikelihoodBounds:
    r"""Both lower bounds on log p(x), per image, from the same K samples z_k ~ q(z|x):

        log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x)
        ELBO ~ 1/K sum_k log w_k         IWAE_K = log 1/K sum_k w_k = logsumexp_k(log w_k) - log K

    Jensen's inequality puts IWAE_K above the ELBO; its expectation grows with K towards log p(x) (Burda et al.).
    Each image gets its own log-sum-exp over its own samples (the srVAE code instead takes the log-sum-exp of
    batch-mean negative ELBOs, with the sign inside flipped: a number no tighter than the ELBO; the book's eq-iwae).
    batch_size bounds the decoder passes at a time; progress: a tqdm bar over the images.

    A model with several latents supplies its weights itself: a method `log_importance_weights(x, k)` returning
    the (k, B) values log p(x, latents) - log q(latents | x) of k joint samples is used when present, and then
    log_likelihood is not needed (the self-supervised VAE, whose latents are u, z_1, ..., z_K).
    """
    model.eval()
    device = model_device(model, device)
    k = dry_run_cap("importance_samples", k)
    samples_per_pass = min(k, batch_size)
    own_weights = getattr(model, "log_importance_weights", None)
    if own_weights is None and log_likelihood is None:
        raise ValueError(f"{type(model).__name__} has no log_importance_weights method: pass log_likelihood")
    elbo, iwae = [], []
    bar = tqdm(total=len(images), desc=f"importance sampling, K={k}", unit="image", disable=not progress)
    for x in images.split(max(1, batch_size // k)):
        x = x.to(device)
        chunks = torch.arange(k).split(samples_per_pass)
        if own_weights is not None:
            log_w = torch.cat([own_weights(x, chunk.numel()) for chunk in chunks])  # (K, B)
        else:
            mu, logvar = model.encode(x)
            log_w = torch.cat([_log_weights(model, x, mu, logvar, log_likelihood, chunk.numel()) for chunk in chunks])
        elbo.append(log_w.mean(0).cpu())
        iwae.append((torch.logsumexp(log_w, 0) - math.log(k)).cpu())
        bar.update(len(x))
    bar.close()
    return LikelihoodBounds(torch.cat(elbo), torch.cat(iwae))


def _log_weights(model, x: Tensor, mu: Tensor, logvar: Tensor, log_likelihood: LogLikelihood, k: int) -> Tensor:
    """log p(x|z_k) + log p(z_k) - log q(z_k|x) for k fresh samples per image: shape (k, B)."""
    z = mu + torch.randn(k, *mu.shape, device=mu.device) * torch.exp(0.5 * logvar)  # (k, B, L)
    z, mu, logvar = z.flatten(0, 1), mu.repeat(k, 1), logvar.repeat(k, 1)  # (k B, L): one code per row, k-major
    log_px_z = log_likelihood(x.repeat(k, 1, 1, 1), model.decode(z))
    return (log_px_z + model.prior.log_prob(z) - Encoder.log_prob(z, mu, logvar)).view(k, -1)


def bits_per_dim(log_px: Tensor, dims: int, levels: int | None = None) -> float:
    r"""bpd = -E_x[log p(x)] / (D ln 2) for a density over pixels in [0,1].

    levels: report on the integer scale of 8-bit data (levels=256). Pixels are stored as k / (levels - 1), so the
    change of variables to k = (levels - 1) x divides the density by (levels - 1)^D: it adds log2(levels - 1)
    bits per dimension (log2 255 = 7.994, not 8). The result is still a *density* evaluated at the pixel values,
    not the probability of the discrete values: only a discrete likelihood (or a density of dequantised data)
    gives bits that a code could achieve. A discrete likelihood needs no conversion: leave levels unset.
    """
    bpd = -log_px.double().mean().item() / (dims * math.log(2))
    return bpd + (math.log2(levels - 1) if levels else 0.0)
