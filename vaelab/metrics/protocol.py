"""One protocol for every model of the book: what `vaelab evaluate` writes and what the results chapter tabulates.

    prior       Frechet distance of n samples x ~ p(x) to the test split's first n images (at most 10,000)
    gmm         the same for decodings of an ex-post GMM fitted to 10,000 training codes (flat latent codes only)
    inactive    latent variables with Var_x[mu_j(x)] < 0.05 on the test images (flat latent codes only)
    bpd         the ELBO and the importance-weighted bound in bits per dimension (models with a likelihood
                over 8-bit pixels: those with `log_importance_weights`)

The features are pytorch-fid's InceptionV3 (then the distance is the FID) or the offline classifier's (then it
is not); the result names which, with the sample count and the reference split, since FIDs from different
implementations, sample counts or reference sets are not comparable.
"""
import os

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import data
from ..runtime import pick_device
from ..train import dry_run_cap
from .classifier import classifier_features
from .frechet import FeatureExtractor, frechet_distance_between, reference_statistics
from .inception import InceptionFeatures
from .latents import decode, encode, fit_latent_gmm, latent_statistics, paper_gmm_components
from .likelihood import bits_per_dim, log_likelihood_bounds


def feature_extractor(features: str, dataset: str, weights: str | None = None) -> tuple[FeatureExtractor, str]:
    """features: "inception" (FID), "classifier" (the offline distance) or "auto" (inception on a GPU)."""
    if features == "auto":
        features = "inception" if torch.cuda.is_available() else "classifier"
    if features == "inception":
        return InceptionFeatures(weights), "FID: pytorch-fid's InceptionV3 pool features"
    if features == "classifier":
        extractor = classifier_features(dataset)
        return extractor, f"Frechet distance in the features of {extractor.name} (not FID)"
    raise ValueError(f"features must be 'auto', 'inception' or 'classifier', got {features!r}")


@torch.no_grad()
def generate(model: nn.Module, n: int, batch_size: int = 500, progress: bool = False) -> Tensor:
    """n samples of the model's p(x), on the CPU; progress: a tqdm bar over them."""
    images = []
    with tqdm(total=n, desc="sampling p(x)", unit="image", disable=not progress) as bar:
        for i in range(0, n, batch_size):
            images.append(model.sample(min(batch_size, n - i)).cpu())
            bar.update(len(images[-1]))
    return torch.cat(images)


def evaluate(model: nn.Module, dataset: str, *, pad_to_32: bool = False, samples: int = 10_000,
             features: str = "auto", weights: str | None = None, likelihood_images: int = 1000,
             importance_samples: int = 512, seed: int = 0, progress: bool = False, ex_post_gmm: bool = True,
             keep_gmm_in: str | os.PathLike | None = None) -> tuple[dict, dict[str, Tensor]]:
    """Measure a trained model on `dataset` by the protocol above. Returns the measures (a JSON-able dict) and
    the generated images by name ("prior", and "gmm" where it applies), for grids. progress: tqdm bars for the
    sampling and the importance sampling (the command line's; minutes on a CPU). ex_post_gmm: False leaves the
    mixture out (encoding 10,000 training images and fitting it is the slowest part for a large encoder).
    keep_gmm_in: a folder where the mixture's fit is kept and found again (fit_latent_gmm's keep_in)."""
    if samples < 2:
        raise ValueError(f"samples must be at least 2 (a covariance needs two), got {samples}")
    samples, likelihood_images = dry_run_cap("samples", samples), dry_run_cap("samples", likelihood_images)
    importance_samples = dry_run_cap("importance_samples", importance_samples)
    model.eval().to(pick_device())
    test = data.load(dataset, "test", pad_to_32=pad_to_32, limit=min(samples, 10_000)).images
    extractor, implementation = feature_extractor(features, dataset, weights)
    # the test images' statistics, kept on disk: every model measured on this data set shares them
    reference = reference_statistics(extractor, dataset, "test", len(test), pad_to_32=pad_to_32)
    torch.manual_seed(seed)
    images = {"prior": generate(model, samples, progress=progress)}
    result = {"distance": implementation, "samples": samples,
              "reference": f"{dataset} test split, its first {len(test):,} images",
              "prior": frechet_distance_between(extractor, images["prior"], reference)}
    # a likelihood over 8-bit pixels: bits per dimension (eq-bpd; Gatopoulos & Tomczak 2020, §4.1)
    if hasattr(model, "log_importance_weights"):
        bounds = log_likelihood_bounds(model, test[:likelihood_images], k=importance_samples, progress=progress)
        dims = test[0].numel()
        result |= {"bpd_elbo": bits_per_dim(bounds.elbo, dims),
                   f"bpd_iwae_{importance_samples}": bits_per_dim(bounds.iwae, dims),
                   "bpd_images": f"the first {min(likelihood_images, len(test)):,} images of the test split"}
        return result, images
    mu, _ = encode(model, test[:2])
    if mu.dim() == 2:  # a flat latent code: the ex-post GMM and the inactive variables apply
        if ex_post_gmm:
            train = data.load(dataset, "train", pad_to_32=pad_to_32, limit=10_000).images
            gmm = fit_latent_gmm(model, train, paper_gmm_components(dataset), keep_in=keep_gmm_in)
            images["gmm"] = decode(model, gmm.sample(samples))
            result["gmm"] = frechet_distance_between(extractor, images["gmm"], reference)
        stats = latent_statistics(model, test)
        result["inactive_latents"], result["latent_dim"] = stats.num_inactive, len(stats.inactive)
    return result, images
