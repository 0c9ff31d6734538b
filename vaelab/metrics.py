"""How the three papers judge a generative model, each measure beside its equation (spec 1.5, 2.9, 4.1).

    Frechet distance   d^2 = ||mu_1 - mu_2||^2 + tr(C_1 + C_2 - 2 (C_1 C_2)^{1/2}) between Gaussians fitted to
                       features of two image sets; with pytorch-fid's InceptionV3 features it is the FID
    ex-post GMM        a Gaussian mixture fitted to the posterior means, sampled in place of the prior
    inactive latents   variables j with Var_x[mu_j(x)] < 0.05, and the variance law Var(mu_j) + E[sigma_j^2] ~ 1
    likelihood         the ELBO and the importance-weighted bound, in bits per dimension

Every function takes image tensors in [0,1] (N x C x H x W) or a decode callable, so it measures a Split-VAE's
x, x1, x2 or their mix as readily as a plain VAE's samples. Model passes run in eval mode without gradients, in
batches, on the model's (or feature extractor's) device.
"""
import hashlib
import math
import os
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from pytorch_fid.inception import (FID_WEIGHTS_URL, FIDInceptionA, FIDInceptionC, FIDInceptionE_1,
                                   FIDInceptionE_2)
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from . import data
from .losses import bernoulli_nll, gaussian_nll
from .checkpoint import CheckpointError, save_checkpoint
from .train import pick_device, seed_everything
from .vae import Encoder

# ---------------------------------------------------------------- the Frechet distance


class FeatureStatistics(NamedTuple):
    """The Gaussian fitted to a set of feature vectors (pytorch-fid calls these mu and sigma)."""

    mean: np.ndarray  # (d,) float64
    cov: np.ndarray  # (d, d) float64
    count: int  # how many feature vectors were averaged


def frechet_distance(mean1: np.ndarray, cov1: np.ndarray, mean2: np.ndarray, cov2: np.ndarray) -> float:
    r"""d^2 = ||mu_1 - mu_2||^2 + tr(C_1) + tr(C_2) - 2 tr((C_1 C_2)^{1/2}), in float64.

    Only the *trace* of (C_1 C_2)^{1/2} is needed: the sum of the square roots of the eigenvalues of C_1 C_2.
    C_1 C_2 is not symmetric, and scipy's sqrtm of it can return complex values (pytorch-fid's "Imaginary
    component" error). But AB and BA have the same eigenvalues, so with S = C_1^{1/2}, A = S and B = S C_2 they
    equal those of S C_2 S: a symmetric positive semi-definite matrix, whose eigenvalues eigvalsh returns real.

    Covariances of fewer samples than dimensions are rank deficient. Their zero eigenvalues come out of eigh as
    rounding noise of size ~eps * lambda_max, and sqrt(noise) ~ 1e-8 sqrt(lambda_max) per eigenvalue would bias
    the trace (always the same way) by far more than rounding. So both decompositions treat eigenvalues below
    numpy's numerical-rank cut-off (matrix_rank's d * eps * lambda_max) as exact zeros.
    """
    mean1, mean2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mean1, mean2))
    cov1, cov2 = (np.atleast_2d(np.asarray(c, dtype=np.float64)) for c in (cov1, cov2))  # np.cov of 1-d is 0-d
    eigenvalues, eigenvectors = np.linalg.eigh(cov1)
    sqrt_cov1 = (eigenvectors * np.sqrt(_numerical_zeros_cut(eigenvalues))) @ eigenvectors.T  # S = V sqrt(W) V^T
    middle = sqrt_cov1 @ cov2 @ sqrt_cov1
    trace_sqrt = np.sqrt(_numerical_zeros_cut(np.linalg.eigvalsh((middle + middle.T) / 2))).sum()
    diff = mean1 - mean2
    distance = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt
    return max(float(distance), 0.0)  # >= 0 in exact arithmetic; rounding can give -1e-12 for identical inputs


def _numerical_zeros_cut(eigenvalues: np.ndarray) -> np.ndarray:
    """Eigenvalues of a symmetric PSD matrix with those below d * eps * lambda_max (rounding noise) set to 0."""
    cutoff = len(eigenvalues) * np.finfo(np.float64).eps * max(eigenvalues.max(initial=0.0), 0.0)
    return np.where(eigenvalues > cutoff, eigenvalues, 0.0)


class FeatureExtractor(nn.Module):
    """Images in [0,1] (N x C x H x W) -> feature vectors (N x dim). Subclasses define `forward`, `dim` and `name`;
    `name` identifies the network *and its weights*, because cached reference statistics are keyed by it."""

    name: str
    dim: int

    @torch.no_grad()
    def features(self, images: Tensor, batch_size: int = 100) -> np.ndarray:
        self.eval()
        device = next(self.parameters()).device
        return np.concatenate([self(batch.to(device)).double().cpu().numpy() for batch in images.split(batch_size)])


def check_images(images) -> None:
    """The metrics take what the models produce: a float tensor N x C x H x W with values in [0,1]."""
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"expected a float tensor of images N x C x H x W in [0,1], got "
                         f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
    if len(images) and not ((images >= 0) & (images <= 1)).all():
        low, high = images.min().item(), images.max().item()
        raise ValueError(f"images must lie in [0,1], found values in [{low:.3g}, {high:.3g}]"
                         + (" (8-bit images? divide by 255)" if high > 1.5 else ""))


def feature_statistics(extractor: FeatureExtractor, images: Tensor, batch_size: int = 100) -> FeatureStatistics:
    check_images(images)
    if len(images) < 2:
        raise ValueError(f"a covariance needs at least 2 images, got {len(images)}")
    features = extractor.features(images, batch_size)
    if len(features) < extractor.dim:
        # d-dimensional features need at least d samples for a full-rank covariance (2048 for Inception); with
        # fewer, the distance is dominated by estimation error and is biased upward.
        warnings.warn(f"{extractor.name}: {len(features)} samples for {extractor.dim}-d features; the covariance is "
                      f"rank deficient and the Frechet distance is biased upward. Use at least {extractor.dim}, and "
                      f"the same number for every model you compare (the papers use 10,000).", stacklevel=2)
    return FeatureStatistics(features.mean(0), np.atleast_2d(np.cov(features, rowvar=False)), len(features))


def frechet_distance_between(extractor: FeatureExtractor, images: Tensor, reference: Tensor | FeatureStatistics,
                             batch_size: int = 100) -> float:
    """The Frechet distance between the features of `images` and those of `reference` (images or statistics)."""
    stats = feature_statistics(extractor, images, batch_size)
    if isinstance(reference, Tensor):
        reference = feature_statistics(extractor, reference, batch_size)
    return frechet_distance(stats.mean, stats.cov, reference.mean, reference.cov)


def reference_statistics(extractor: FeatureExtractor, dataset: str, split: str = "test", n: int = 10_000, *,
                         pad_to_32: bool = False, batch_size: int = 100,
                         cache_dir: str | os.PathLike | None = None) -> FeatureStatistics:
    """Statistics of the first n images of a dataset split, cached in an .npz with pytorch-fid's keys (mu, sigma).

    The file name holds everything the statistics depend on (dataset, split, n, image size, extractor and weights),
    so a cache computed for other data or another network is never picked up.
    """
    images = data.load(dataset, split, pad_to_32=pad_to_32, limit=n).images
    cache_dir = Path(cache_dir) if cache_dir is not None else data.data_root() / "stats"
    path = cache_dir / f"{dataset}_{split}_n{n}_{images.shape[-1]}px_{extractor.name}.npz"
    if path.is_file():
        try:
            with np.load(path) as cached:
                return FeatureStatistics(cached["mu"], cached["sigma"], int(cached["count"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"the cached statistics {path} are unreadable ({error}); delete the file and they "
                             f"are computed again") from error
    stats = feature_statistics(extractor, images, batch_size)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    with open(partial, "wb") as file:
        np.savez(file, mu=stats.mean, sigma=stats.cov, count=stats.count)
    os.replace(partial, path)  # readers see a whole file or none
    return stats


def _weights_digest(module: nn.Module) -> str:
    """8 hex digits of a hash of every weight: two extractors share cached statistics only if all weights agree."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:8]


# ---------------------------------------------------------------- FID: pytorch-fid's InceptionV3


class FIDWeightsUnavailableError(FileNotFoundError):
    """The FID Inception weights are not on disk and could not be downloaded."""


def fid_weights_path() -> Path:
    """Where pytorch-fid (through torch.hub) caches the FID weights: $TORCH_HOME/hub/checkpoints/<file>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(FID_WEIGHTS_URL).path).name


def _weights_unavailable(problem: str) -> FIDWeightsUnavailableError:
    return FIDWeightsUnavailableError(
        f"{problem}\nThe FID Inception weights (TensorFlow's 2015-12-05 graph, ported by pytorch-fid) are needed. "
        f"On a machine with internet access download\n  {FID_WEIGHTS_URL}\nand either put the file at\n  "
        f"{fid_weights_path()}\n(the torch.hub cache; set TORCH_HOME to move it) or pass its path as "
        f"InceptionFeatures(weights_path=...).")


class InceptionFeatures(FeatureExtractor):
    """The 2048-d pool features of pytorch-fid's InceptionV3: the Frechet distance in them is the FID.

    Images are resized to 299x299 bilinearly and mapped to [-1, 1], exactly as pytorch-fid does; grey images are
    repeated over three channels. weights_path: a local copy of the weights; None: the torch.hub cache, downloading
    into it when the file is missing.
    """

    dim = 2048

    def __init__(self, weights_path: str | os.PathLike | None = None, device: str | torch.device | None = None):
        super().__init__()
        if weights_path is not None:
            path = Path(weights_path)
            if not path.is_file():
                raise _weights_unavailable(f"weights_path={str(path)!r} is not a file.")
        else:
            path = fid_weights_path()
            if not path.is_file():
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with data.network_timeout():
                        torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(path))  # a temp file, then renamed
                except OSError as error:  # no network, DNS, proxy, HTTP and disk errors all land here
                    raise _weights_unavailable(f"{path} is missing and downloading it failed: {error}") from error
        try:
            weights = torch.load(path, map_location="cpu", weights_only=True)
            self.net = fid_inception(weights)
        except Exception as error:  # truncated, corrupt, or another network's weights: say which file
            raise _weights_unavailable(f"{path} is not a readable copy of the FID weights ({error}); delete it "
                                       f"(it is downloaded again when online) or replace it.") from error
        self.name = f"inception-fid-{_weights_digest(self.net)}"
        self.to(device or pick_device())

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grey -> RGB, as PIL's convert("RGB") does for pytorch-fid's image files
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(2 * x - 1)


def fid_inception(state_dict: dict) -> nn.Sequential:
    """pytorch-fid's FID InceptionV3 up to its 2048-d average pool, built without downloading anything.

    It is torchvision's InceptionV3 with pytorch-fid's TensorFlow-compatible blocks in place of nine of its own
    (their average pools ignore the zero padding; the last block max-pools), as pytorch_fid.inception does.
    """
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = FIDInceptionA(192, 32), FIDInceptionA(256, 64), FIDInceptionA(288, 64)
    net.Mixed_6b, net.Mixed_6c = FIDInceptionC(768, 128), FIDInceptionC(768, 160)
    net.Mixed_6d, net.Mixed_6e = FIDInceptionC(768, 160), FIDInceptionC(768, 192)
    net.Mixed_7b, net.Mixed_7c = FIDInceptionE_1(1280), FIDInceptionE_2(2048)
    net.load_state_dict(state_dict)
    return nn.Sequential(
        net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, nn.MaxPool2d(3, stride=2),
        net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, nn.MaxPool2d(3, stride=2),
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d,
        net.Mixed_6e, net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ).requires_grad_(False)


# ---------------------------------------------------------------- offline: a small classifier's features


class SmallClassifier(nn.Module):
    """A 28x28 grey image -> class logits. `features` ends in the penultimate layer the Frechet distance uses."""

    def __init__(self, num_classes: int = 10, feature_dim: int = 128):
        super().__init__()
        self.feature_dim = feature_dim
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16 x 14 x 14
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 7 x 7
            nn.Flatten(), nn.Linear(32 * 7 * 7, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def train_classifier(images: Tensor, labels: Tensor, *, epochs: int = 3, batch_size: int = 128, lr: float = 1e-3,
                     seed: int = 0, device: str | torch.device | None = None) -> SmallClassifier:
    """Cross-entropy training with Adam; a few epochs suffice for the features to separate the classes."""
    seed_everything(seed)
    device = torch.device(device) if device else pick_device()
    net = SmallClassifier(num_classes=int(labels.max()) + 1).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(images)).split(batch_size):
            loss = F.cross_entropy(net(images[batch].to(device)), labels[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return net.eval()


@torch.no_grad()
def classifier_accuracy(net: SmallClassifier, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    device = next(net.parameters()).device
    net.eval()
    predictions = torch.cat([net(batch.to(device)).argmax(1).cpu() for batch in images.split(batch_size)])
    return (predictions == labels).float().mean().item()


class ClassifierFeatures(FeatureExtractor):
    """Penultimate features of a SmallClassifier trained on a 28x28 dataset's labels.

    The Frechet distance in these features measures sample quality offline and in seconds, but it is *not* the
    FID: another network, other features, another scale. Its values are comparable only with each other.
    32x32 inputs (the zero-padded images of the full recipe) are cropped back to their central 28x28.
    """

    def __init__(self, classifier: SmallClassifier, dataset: str, test_accuracy: float):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.dim = classifier.feature_dim
        self.name = f"{dataset}-classifier-{_weights_digest(classifier)}"
        self.test_accuracy = test_accuracy

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] == (32, 32):
            x = x[..., 2:30, 2:30]
        if x.shape[1:] != (1, 28, 28):
            raise ValueError(f"the classifier reads 1 x 28 x 28 (or padded 1 x 32 x 32) images, got {tuple(x.shape)}")
        return self.classifier.features(x)


def classifier_features(dataset: str = "fashion-mnist", *, train_limit: int = 10_000, epochs: int = 2, seed: int = 0,
                        cache_dir: str | os.PathLike | None = None,
                        device: str | torch.device | None = None) -> ClassifierFeatures:
    """The offline feature extractor of `dataset`: trained on its first train_limit training images once, then
    loaded from <data root>/classifiers/."""
    cache_dir = Path(cache_dir) if cache_dir is not None else data.data_root() / "classifiers"
    path = cache_dir / f"{dataset}_n{train_limit}_e{epochs}_s{seed}.pt"
    device = torch.device(device) if device else pick_device()
    if path.is_file():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            net = SmallClassifier(num_classes=payload["num_classes"])
            net.load_state_dict(payload["state_dict"])
        except Exception as error:  # truncated file, old format, other shapes: the same advice for each
            raise CheckpointError(f"could not load the classifier {path} ({error!r}); delete it to retrain") from error
        return ClassifierFeatures(net.to(device), dataset, payload["test_accuracy"])
    train = data.load(dataset, "train", limit=train_limit)
    net = train_classifier(train.images, train.labels, epochs=epochs, seed=seed, device=device)
    test = data.load(dataset, "test")
    accuracy = classifier_accuracy(net, test.images, test.labels)
    save_checkpoint(path, {"state_dict": net.state_dict(), "num_classes": net.head.out_features,
                           "test_accuracy": accuracy})
    return ClassifierFeatures(net, dataset, accuracy)


# ---------------------------------------------------------------- encoding, decoding and the ex-post GMM


def _device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device else next(model.parameters()).device


@torch.no_grad()
def encode(model: nn.Module, images: Tensor, *, batch_size: int = 500,
           device: str | torch.device | None = None) -> tuple[Tensor, Tensor]:
    """(mu, log sigma^2) of q(z|x) for every image, on the CPU."""
    model.eval()
    device = _device(model, device)
    pairs = [model.encode(batch.to(device)) for batch in images.split(batch_size)]
    return torch.cat([mu for mu, _ in pairs]).cpu(), torch.cat([logvar for _, logvar in pairs]).cpu()


@torch.no_grad()
def decode(model: nn.Module, z: Tensor, decoder: Callable[[Tensor], Tensor] | None = None, *,
           batch_size: int = 500, device: str | torch.device | None = None) -> Tensor:
    """Images decoded from latent codes z, on the CPU. decoder: model.decode unless given, e.g.
    `lambda z: model.decode_parts(z)[1]` for a Split-VAE's x1."""
    model.eval()
    device, decoder = _device(model, device), decoder or model.decode
    return torch.cat([decoder(batch.to(device)).cpu() for batch in z.split(batch_size)])


def paper_gmm_components(dataset: str) -> int:
    """The Split-VAE paper's mixture size: 20 components for MNIST-like grey digits, 100 otherwise (spec 1.5)."""
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
        """n codes, float32. sklearn returns them grouped by component; they are shuffled so any slice is fair."""
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
                   seed: int = 0, *, batch_size: int = 500, device: str | torch.device | None = None) -> LatentGMM:
    """Fit the mixture to the posterior means mu(x) of `images` (the training set: the paper's code used test
    images, which leaks the data the samples are then compared with)."""
    mu, _ = encode(model, images, batch_size=batch_size, device=device)
    return LatentGMM.fit(mu, n_components, covariance_type, seed)


# ---------------------------------------------------------------- inactive latent variables


@dataclass
class LatentStatistics:
    """Per latent variable j, over a set of images x."""

    mean_variance: Tensor  # Var_x[mu_j(x)]: how much the code moves with the image
    posterior_variance: Tensor  # E_x[sigma_j^2(x)]: how uncertain the encoder is on average
    threshold: float

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
    """The Split-VAE code's collapse test (spec 1.5): j is inactive when Var_x[mu_j(x)] < threshold."""
    mu, logvar = encode(model, images, batch_size=batch_size, device=device)
    return LatentStatistics(mu.double().var(0, unbiased=False), logvar.double().exp().mean(0), threshold)


# ---------------------------------------------------------------- log-likelihood: ELBO and importance weighting

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
                          *, batch_size: int = 500, device: str | torch.device | None = None) -> LikelihoodBounds:
    r"""Both lower bounds on log p(x), per image, from the same K samples z_k ~ q(z|x):

        log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x)
        ELBO ~ 1/K sum_k log w_k         IWAE_K = log 1/K sum_k w_k = logsumexp_k(log w_k) - log K

    Jensen's inequality puts IWAE_K above the ELBO; its expectation grows with K towards log p(x) (Burda et al.).
    Each image gets its own log-sum-exp over its own samples (the srVAE code instead takes the log-sum-exp of
    batch-mean negative ELBOs, with the sign inside flipped: a number no tighter than the ELBO, spec 2.9).
    batch_size bounds the decoder passes at a time.

    A model with several latents supplies its weights itself: a method `log_importance_weights(x, k)` returning
    the (k, B) values log p(x, latents) - log q(latents | x) of k joint samples is used when present, and then
    log_likelihood is not needed (the self-supervised VAE, whose latents are u, z_1, ..., z_K).
    """
    model.eval()
    device = _device(model, device)
    samples_per_pass = min(k, batch_size)
    own_weights = getattr(model, "log_importance_weights", None)
    if own_weights is None and log_likelihood is None:
        raise ValueError(f"{type(model).__name__} has no log_importance_weights method: pass log_likelihood")
    elbo, iwae = [], []
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
    return LikelihoodBounds(torch.cat(elbo), torch.cat(iwae))


def _log_weights(model, x: Tensor, mu: Tensor, logvar: Tensor, log_likelihood: LogLikelihood, k: int) -> Tensor:
    """log p(x|z_k) + log p(z_k) - log q(z_k|x) for k fresh samples per image: shape (k, B)."""
    z = mu + torch.randn(k, *mu.shape, device=mu.device) * torch.exp(0.5 * logvar)  # (k, B, L)
    x_hat = model.decode(z.flatten(0, 1))
    log_px_z = log_likelihood(x.expand(k, *x.shape).flatten(0, 1), x_hat).view(k, -1)
    return log_px_z + model.prior.log_prob(z) - Encoder.log_prob(z, mu, logvar)


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
