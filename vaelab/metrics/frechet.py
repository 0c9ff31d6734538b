"""The Frechet distance between Gaussians fitted to features of two image sets, and the statistics it compares."""
import hashlib
import os
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from .. import data
from ..images import check_images
from ..train import dry_run_cap


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


def frechet_distance_of_samples(features: np.ndarray, mean2: np.ndarray, cov2: np.ndarray) -> float:
    """frechet_distance with the first Gaussian fitted to `features` (n x d, n >= 2), exactly, in O(n d^2) instead of
    O(d^3) when there are fewer samples than dimensions (a few hundred samples of Inception's 2,048 features).

    With X the centred features divided by sqrt(n - 1), C_1 = X^T X, and C_1 C_2 = X^T (X C_2) has the nonzero
    eigenvalues of X C_2 X^T, an n x n symmetric positive semi-definite matrix."""
    features = np.asarray(features, dtype=np.float64)
    n, d = features.shape
    mean1 = features.mean(0)
    if n > d:  # the d x d route is the smaller one
        return frechet_distance(mean1, np.atleast_2d(np.cov(features, rowvar=False)), mean2, cov2)
    x = (features - mean1) / np.sqrt(n - 1)
    middle = x @ np.atleast_2d(np.asarray(cov2, dtype=np.float64)) @ x.T
    trace_sqrt = np.sqrt(_numerical_zeros_cut(np.linalg.eigvalsh((middle + middle.T) / 2))).sum()
    diff = mean1 - np.atleast_1d(np.asarray(mean2, dtype=np.float64))
    distance = diff @ diff + (x * x).sum() + np.trace(np.atleast_2d(cov2)) - 2 * trace_sqrt
    return max(float(distance), 0.0)


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


def _features(extractor: FeatureExtractor, images: Tensor, batch_size: int) -> np.ndarray:
    check_images(images)
    if len(images) < 2:
        raise ValueError(f"a covariance needs at least 2 images, got {len(images)}")
    if len(images) < extractor.dim:
        # d-dimensional features need at least d samples for a full-rank covariance (2048 for Inception); with
        # fewer, the distance is dominated by estimation error and is biased upward.
        warnings.warn(f"{extractor.name}: {len(images)} samples for {extractor.dim}-d features; the covariance is "
                      f"rank deficient and the Frechet distance is biased upward. Use at least {extractor.dim}, and "
                      f"the same number for every model you compare (the papers use 10,000).", stacklevel=3)
    return extractor.features(images, batch_size)


def feature_statistics(extractor: FeatureExtractor, images: Tensor, batch_size: int = 100) -> FeatureStatistics:
    features = _features(extractor, images, batch_size)
    return FeatureStatistics(features.mean(0), np.atleast_2d(np.cov(features, rowvar=False)), len(features))


def frechet_distance_between(extractor: FeatureExtractor, images: Tensor, reference: Tensor | FeatureStatistics,
                             batch_size: int = 100) -> float:
    """The Frechet distance between the features of `images` and those of `reference` (images or statistics)."""
    if isinstance(reference, Tensor):
        reference = feature_statistics(extractor, reference, batch_size)
    return frechet_distance_of_samples(_features(extractor, images, batch_size), reference.mean, reference.cov)


def reference_statistics(extractor: FeatureExtractor, dataset: str, split: str = "test", n: int = 10_000, *,
                         pad_to_32: bool = False, batch_size: int = 100,
                         cache_dir: str | os.PathLike | None = None) -> FeatureStatistics:
    """Statistics of the first n images of a dataset split, cached in an .npz with pytorch-fid's keys (mu, sigma).

    The file name holds everything the statistics depend on (dataset, split, n, image size, extractor and weights),
    so a cache computed for other data or another network is never picked up.
    """
    n = dry_run_cap("samples", n)
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


def weights_digest(module: nn.Module) -> str:
    """8 hex digits of a hash of every weight: two extractors share cached statistics only if all weights agree."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:8]


