"""The latent space: encoding and decoding in batches, the ex-post GMM, inactive variables."""
import hashlib
import inspect
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from ..checkpoint import CheckpointError, data_fingerprint, save_checkpoint
from ..train import dry_run_cap
from .frechet import weights_digest


def model_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device else next(model.parameters()).device


@torch.no_grad()
def encode(model: nn.Module, images: Tensor, *, batch_size: int = 500,
           device: str | torch.device | None = None) -> tuple[Tensor, Tensor]:
    """(mu, log sigma^2) of q(z|x) for every image, on the CPU."""
    model.eval()
    device = model_device(model, device)
    pairs = [model.encode(batch.to(device)) for batch in images.split(batch_size)]
    return torch.cat([mu for mu, _ in pairs]).cpu(), torch.cat([logvar for _, logvar in pairs]).cpu()


@torch.no_grad()
def decode(model: nn.Module, z: Tensor, decoder: Callable[[Tensor], Tensor] | None = None, *,
           batch_size: int = 500, device: str | torch.device | None = None) -> Tensor:
    """Images decoded from latent codes z, on the CPU. decoder: model.decode unless given, e.g.
    `lambda z: model.decode_parts(z)[1]` for a Split-VAE's x1."""
    model.eval()
    device, decoder = model_device(model, device), decoder or model.decode
    return torch.cat([decoder(batch.to(device)).cpu() for batch in z.split(batch_size)])


def paper_gmm_components(dataset: str) -> int:
    """The Split-VAE paper's mixture size (its Tables 1, 3, 4): 20 for MNIST-like grey digits, 100 otherwise."""
    return 20 if dataset in ("mnist", "fashion-mnist", "digits") else 100


class LatentGMM:
    """An ex-post density of the latent codes (Ghosh et al.'s RAE): a scikit-learn GaussianMixture fitted after
    training, sampled in place of the prior. It can be saved next to the model and loaded without refitting."""

    FORMAT = "vaelab-latent-gmm-1"
    FITTED = ("weights_", "means_", "covariances_", "precisions_cholesky_")

    def __init__(self, mixture: GaussianMixture):
        self.mixture = mixture

    @classmethod
    def fit(cls, codes: Tensor, n_components: int, covariance_type: str = "full", seed: int = 0,
            max_iter: int = 200) -> "LatentGMM":
        mixture = GaussianMixture(n_components, covariance_type=covariance_type, max_iter=max_iter, random_state=seed)
        # EM works on many small matrices, where BLAS/OpenMP threads cost more in synchronisation than they save:
        # on two busy cores one thread fitted 10,000 16-d codes 7-10x faster than two (measured).
        with threadpool_limits(1):
            return cls(mixture.fit(codes.double().numpy()))

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """n codes, float32, shuffled: sklearn returns them grouped by component."""
        previous, self.mixture.random_state = self.mixture.random_state, seed  # sklearn samples with its own seed
        try:
            z, _ = self.mixture.sample(n)
        finally:
            self.mixture.random_state = previous  # a later refit must not inherit the sampling seed
        return torch.from_numpy(z[np.random.default_rng(seed).permutation(n)]).float()

    def log_prob(self, z: Tensor) -> Tensor:
        return torch.from_numpy(self.mixture.score_samples(z.double().numpy()))

    def state_dict(self) -> dict:
        settings = {"n_components": self.mixture.n_components, "covariance_type": self.mixture.covariance_type}
        return {"format": self.FORMAT, **settings,
                **{name: torch.from_numpy(getattr(self.mixture, name)) for name in self.FITTED}}

    @classmethod
    def from_state_dict(cls, state: dict) -> "LatentGMM":
        if state.get("format") != cls.FORMAT:
            raise CheckpointError(f"not a latent GMM (expected format {cls.FORMAT!r})")
        mixture = GaussianMixture(state["n_components"], covariance_type=state["covariance_type"])
        for name in cls.FITTED:
            setattr(mixture, name, state[name].numpy())
        return cls(mixture)

    def save(self, path: str | os.PathLike) -> None:
        save_checkpoint(path, self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatentGMM":
        return cls.from_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def fit_latent_gmm(model: nn.Module, images: Tensor, n_components: int, covariance_type: str = "full",
                   seed: int = 0, *, batch_size: int = 500, device: str | torch.device | None = None,
                   keep_in: str | os.PathLike | None = None) -> LatentGMM:
    """Fit the mixture to the posterior means mu(x) of `images` (the training set: the paper's code used test
    images, which leaks the data the samples are then compared with). keep_in: a folder where the fit is kept under
    a digest of everything it depends on (model class, code and weights, images, settings) and loaded when asked
    again; EM with a fixed seed is deterministic, so a kept fit is the fit. A dry run fits a few components."""
    n_components = dry_run_cap("mixture_components", n_components)
    path = None
    if keep_in is not None:
        path = Path(keep_in) / f"latent_gmm_{_fit_digest(model, images, n_components, covariance_type, seed)}.pt"
        if path.exists():
            try:
                return LatentGMM.load(path)
            except (CheckpointError, OSError, RuntimeError, EOFError, pickle.UnpicklingError):  # damaged: refitted
                pass
    mu, _ = encode(model, images, batch_size=batch_size, device=device)
    gmm = LatentGMM.fit(mu, n_components, covariance_type, seed)
    if path is not None:
        gmm.save(path)
    return gmm


def _fit_digest(model: nn.Module, images: Tensor, *settings) -> str:
    # the fingerprints the cached Frechet statistics and the checkpoints are keyed by
    identity = (type(model).__qualname__, inspect.getsource(type(model)), weights_digest(model),
                data_fingerprint(images), settings)
    return hashlib.blake2b(repr(identity).encode(), digest_size=12).hexdigest()


# ---------------------------------------------------------------- inactive latent variables


@dataclass
class LatentStatistics:
    """Per latent variable j, over a set of images x."""

    mean_variance: Tensor  # Var_x[mu_j(x)]: how much the code moves with the image
    posterior_variance: Tensor  # E_x[sigma_j^2(x)]: how uncertain the encoder is on average
    threshold: float

    @classmethod
    def of_codes(cls, mu: Tensor, logvar: Tensor, threshold: float = 0.05) -> "LatentStatistics":
        """The statistics of codes already encoded (`encode`'s mu and log sigma^2): a page that needs the codes
        too encodes once."""
        return cls(mu.double().var(0, unbiased=False), logvar.double().exp().mean(0), threshold)

    @property
    def variance_law(self) -> Tensor:
        """Var(mu_j) + E[sigma_j^2], which is the variance of the aggregate posterior and should be ~1 = Var_p(z_j)."""
        return self.mean_variance + self.posterior_variance

    @property
    def inactive(self) -> Tensor:
        """True for variables whose mean ignores the image: their code is prior noise the decoder learns to ignore."""
        return self.mean_variance < self.threshold

    @property
    def num_inactive(self) -> int:
        return int(self.inactive.sum())


def latent_statistics(model: nn.Module, images: Tensor, threshold: float = 0.05, *, batch_size: int = 500,
                      device: str | torch.device | None = None) -> LatentStatistics:
    """The Split-VAE code's collapse test (book: eq-variance-law): j is inactive when Var_x[mu_j(x)] < threshold."""
    return LatentStatistics.of_codes(*encode(model, images, batch_size=batch_size, device=device), threshold)


