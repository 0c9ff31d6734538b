"""vaelab.metrics against oracles: pytorch-fid's own code, closed forms, and models whose likelihood is known."""
import math
import struct
import time
import warnings

import numpy as np
import pytest
import torch
import torchvision
from pytorch_fid.fid_score import calculate_frechet_distance
from pytorch_fid.inception import FID_WEIGHTS_URL, InceptionV3
from torch import nn

from vaelab import BalancedGaussianELBO, GammaBalance, TrainConfig, VAE, data, fit, metrics
from vaelab.losses import gaussian_kl
from vaelab.vae import StandardNormalPrior

# ---------------------------------------------------------------- the Frechet distance


def random_statistics(rng, n, d, shift=0.0):
    features = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + shift
    return features.mean(0), np.cov(features, rowvar=False)


@pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning")  # inside pytorch-fid
def test_frechet_distance_agrees_with_pytorch_fid():
    rng = np.random.default_rng(0)
    for d in (2, 5, 64):  # not 1: scipy 1.17's sqrtm returns a bare 1x1 array there, which pytorch-fid can't unpack
        a, b = random_statistics(rng, 400, d), random_statistics(rng, 300, d, shift=0.5)
        assert metrics.frechet_distance(*a, *b) == pytest.approx(calculate_frechet_distance(*a, *b), rel=1e-7)


def test_frechet_distance_closed_form_for_commuting_covariances():
    # C1 = Q diag(a) Q^T and C2 = Q diag(b) Q^T commute, so (C1 C2)^{1/2} = Q diag(sqrt(ab)) Q^T and
    # d^2 = ||mu1 - mu2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    assert metrics.frechet_distance(mu1, q * a @ q.T, mu2, q * b @ q.T) == pytest.approx(expected, rel=1e-9)
    # one dimension: (m1 - m2)^2 + (s1 - s2)^2 with s the standard deviations
    assert metrics.frechet_distance(1.0, 4.0, -0.5, 0.25) == pytest.approx(1.5**2 + (2 - 0.5) ** 2, rel=1e-12)


def test_frechet_distance_is_zero_for_identical_and_finite_for_rank_deficient_statistics():
    rng = np.random.default_rng(2)
    a, b = random_statistics(rng, 20, 100), random_statistics(rng, 30, 100, shift=0.1)  # ranks 19 and 29 of 100
    assert metrics.frechet_distance(*a, *a) == pytest.approx(0.0, abs=1e-8 * np.trace(a[1]))
    ab, ba = metrics.frechet_distance(*a, *b), metrics.frechet_distance(*b, *a)
    assert isinstance(ab, float) and np.isfinite(ab) and ab > 0
    assert ab == pytest.approx(ba, rel=1e-9)


def test_the_distance_of_few_samples_is_the_same_through_their_n_x_n_matrix():
    rng = np.random.default_rng(3)
    reference = random_statistics(rng, 300, 80, shift=0.2)
    for n in (2, 30, 80, 200):  # fewer samples than dimensions (the n x n route), as many, more (the d x d route)
        features = rng.normal(size=(n, 80)) @ rng.normal(size=(80, 80))
        by_covariance = metrics.frechet_distance(features.mean(0), np.cov(features, rowvar=False), *reference)
        assert metrics.frechet_distance_of_samples(features, *reference) == pytest.approx(by_covariance, rel=1e-9)


def exact_statistics_pair(d: int, rank1: int, rank2: int, seed: int):
    """C1 = Q diag(a) Q^T and C2 = Q diag(b) Q^T with known eigenvalues (zeros beyond the ranks, the non-zero
    ones in [1, 10]) and the exact squared distance sum_i (sqrt a_i - sqrt b_i)^2 + ||mu1 - mu2||^2."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a, b = np.zeros(d), np.zeros(d)
    a[:rank1], b[:rank2] = rng.uniform(1, 10, rank1), rng.uniform(1, 10, rank2)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    return (mu1, (q * a) @ q.T, mu2, (q * b) @ q.T), exact


def _distances_with_blas_threads(threads: int, cases):
    from threadpoolctl import threadpool_limits
    with threadpool_limits(threads):
        return [(metrics.frechet_distance(*stats), metrics.frechet_distance(*stats[2:], *stats[:2]))
                for stats, _ in cases]


def test_frechet_distance_is_exact_at_inception_size_with_one_and_two_blas_threads():
    d = 2048
    eps = np.finfo(np.float64).eps
    cases = [exact_statistics_pair(d, d, d, seed=0),  # full rank
             exact_statistics_pair(d, 1000, 1500, seed=1),  # rank deficient, as 1,000 samples of 2048-d features
             exact_statistics_pair(d, 700, 700, seed=2)]  # rank deficient and sharing their null space
    for threads in (1, 2):
        for (stats, exact), (ab, ba) in zip(cases, _distances_with_blas_threads(threads, cases)):
            # Rounding bound: each of the ~d-term sums (traces, eigenvalue sums) and the backward-stable
            # eigensolvers err by a small multiple of d * eps * (the size of the terms), i.e. of
            # d * eps * (tr C1 + tr C2). The sqrt bias that a numerically-zero eigenvalue would add,
            # sqrt(eps * lambda_max) ~ 5e-8 each for hundreds of them, lies far above this tolerance.
            tolerance = 10 * d * eps * (np.trace(stats[1]) + np.trace(stats[3]))
            assert abs(ab - exact) <= tolerance, (threads, ab, exact, tolerance)
            assert abs(ba - exact) <= tolerance, (threads, ba, exact, tolerance)


# ---------------------------------------------------------------- FID with pytorch-fid's InceptionV3


@pytest.fixture
def offline_torch_hub(tmp_path, monkeypatch):
    """An empty torch.hub cache and every HTTP(S) request sent to a closed local port: offline, at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    return tmp_path / "torch"


def test_inception_features_match_pytorch_fid_from_local_weights(offline_torch_hub, tmp_path):
    # torchvision's InceptionV3 has exactly the parameter names and shapes of pytorch-fid's FID network, so its
    # random initial weights stand in for the real file, which cannot be downloaded here.
    weights = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                              num_classes=1008).state_dict()
    local = tmp_path / "fid_weights.pth"
    torch.save(weights, local)
    cached = metrics.fid_weights_path()
    assert cached.is_relative_to(offline_torch_hub)
    cached.parent.mkdir(parents=True)
    torch.save(weights, cached)  # where pytorch-fid itself looks, so its InceptionV3 loads without a download

    ours = metrics.InceptionFeatures(weights_path=local, device="cpu")
    assert ours.name == metrics.InceptionFeatures(device="cpu").name  # the same weights from the torch.hub cache
    grey = torch.rand(2, 1, 28, 28)
    features = ours.features(grey)
    with torch.no_grad():
        theirs = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()(grey.repeat(1, 3, 1, 1))[0]
    assert features.shape == (2, 2048) and features.dtype == np.float64
    theirs = theirs.flatten(1).double().numpy()
    assert np.abs(theirs).max() > 0
    np.testing.assert_allclose(features, theirs, rtol=1e-5, atol=1e-6 * np.abs(theirs).max())


def test_missing_fid_weights_offline_fail_fast_with_directions(offline_torch_hub, tmp_path):
    start = time.perf_counter()
    with pytest.raises(metrics.FIDWeightsUnavailableError) as error:
        metrics.InceptionFeatures(device="cpu")
    assert time.perf_counter() - start < 10
    message = str(error.value)
    assert FID_WEIGHTS_URL in message and str(metrics.fid_weights_path()) in message
    assert "weights_path" in message and "downloading it failed" in message
    with pytest.raises(metrics.FIDWeightsUnavailableError, match="nowhere.pth"):
        metrics.InceptionFeatures(weights_path=tmp_path / "nowhere.pth")


# ---------------------------------------------------------------- the offline classifier and cached statistics


def write_idx(path, array):
    """Big-endian IDX: magic 2051 + N, H, W for images; magic 2049 + N for labels."""
    magic = 2051 if array.ndim == 3 else 2049
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


@pytest.fixture
def bars_dataset(tmp_path, monkeypatch):
    """An MNIST-format dataset under a fresh data root whose class c is a bright bar on rows 2c+4, 2c+5."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 600), ("t10k", 300)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for image, label in zip(images, labels):
            image[2 * label + 4:2 * label + 6, 4:24] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"mnist": [], "fashion-mnist": []})
    return tmp_path / "data"


def test_classifier_learns_the_labels_and_is_cached(bars_dataset):
    extractor = metrics.classifier_features("mnist", train_limit=600, epochs=5, device="cpu")
    [cached] = (bars_dataset / "classifiers").iterdir()
    assert extractor.test_accuracy > 0.95
    written = cached.stat().st_mtime_ns
    again = metrics.classifier_features("mnist", train_limit=600, epochs=5, device="cpu")
    assert cached.stat().st_mtime_ns == written and again.test_accuracy == extractor.test_accuracy
    assert again.name == extractor.name and again.name.startswith("mnist-classifier-") and "FID" not in again.name

    images = data.load("mnist", "test", limit=8).images
    features = extractor.features(images)
    assert features.shape == (8, 128)
    np.testing.assert_array_equal(again.features(images), features)
    padded = data.load("mnist", "test", limit=8, pad_to_32=True).images  # cropped back to the same 28x28
    np.testing.assert_array_equal(extractor.features(padded), features)
    with pytest.raises(ValueError, match="28 x 28"):
        extractor.features(torch.rand(2, 1, 16, 16))


def test_reference_statistics_are_cached_under_a_key_of_everything_they_depend_on(bars_dataset):
    extractor = metrics.classifier_features("mnist", train_limit=600, epochs=1, device="cpu")
    stats = metrics.reference_statistics(extractor, "mnist", "test", n=200)
    [path] = (bars_dataset / "stats").iterdir()
    for part in ("mnist", "test", "n200", "28px", extractor.name):
        assert part in path.name
    direct = metrics.feature_statistics(extractor, data.load("mnist", "test", limit=200).images)
    np.testing.assert_allclose(stats.mean, direct.mean)
    np.testing.assert_allclose(stats.cov, direct.cov)
    assert stats.count == 200

    # The same key reads the file (here altered on purpose), not the images.
    with np.load(path) as cached:
        np.savez(path, mu=cached["mu"] + 1, sigma=cached["sigma"], count=cached["count"])
    np.testing.assert_allclose(metrics.reference_statistics(extractor, "mnist", "test", n=200).mean, stats.mean + 1)

    metrics.reference_statistics(extractor, "mnist", "test", n=150)
    metrics.reference_statistics(extractor, "mnist", "train", n=200)
    metrics.reference_statistics(extractor, "mnist", "test", n=200, pad_to_32=True)
    assert len(list((bars_dataset / "stats").iterdir())) == 4

    path.write_bytes(path.read_bytes()[:100])  # a cache cut short, e.g. by a full disk
    with pytest.raises(ValueError, match=rf"{path.name}.*delete the file"):
        metrics.reference_statistics(extractor, "mnist", "test", n=200)
    with pytest.raises(ValueError, match="at least 2 images"):
        metrics.feature_statistics(extractor, data.load("mnist", "test", limit=1).images)
    with pytest.raises(ValueError, match="divide by 255"):
        metrics.feature_statistics(extractor, data.load("mnist", "test", limit=8).images * 255)
    with pytest.raises(ValueError, match="NaN"):
        metrics.feature_statistics(extractor, data.load("mnist", "test", limit=8).images * float("nan"))


def test_fewer_samples_than_feature_dimensions_warn(bars_dataset):
    extractor = metrics.classifier_features("mnist", train_limit=600, epochs=1, device="cpu")
    images = data.load("mnist", "test").images
    with pytest.warns(UserWarning, match="rank deficient"):
        metrics.feature_statistics(extractor, images[:100])  # 100 samples, 128-d features
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics.feature_statistics(extractor, images[:200])
    # two halves of the same data are close; the data and pure noise are far apart
    same = metrics.frechet_distance_between(extractor, images[:150], images[150:])
    assert same < 0.2 * metrics.frechet_distance_between(extractor, images[:150], torch.rand(150, 1, 28, 28))


# ---------------------------------------------------------------- tiny trained VAE, ex-post GMM, latent statistics


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train").images, data.load("digits", "test").images


@pytest.fixture(scope="module")
def trained_tiny(digits):
    """A tiny VAE after a few epochs, with gamma held at 0.05 so that the decoder likelihood is sharp enough for
    importance weighting to matter. Every property tested with it holds for any model."""
    from conftest import TINY

    torch.manual_seed(0)
    model, objective = VAE(TINY), BalancedGaussianELBO(beta=1.0, gamma=GammaBalance(initial=0.05))
    fit(model, objective, digits[0], TrainConfig(epochs=3, batch_size=50, progress=False, device="cpu"))
    return model.eval(), float(objective.balance.gamma)


def test_gmm_recovers_clusters_and_samples_identically_after_save_and_load(tmp_path):
    rng = np.random.default_rng(0)
    centres = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    codes = torch.from_numpy(centres[rng.integers(0, 3, 900)] + 0.3 * rng.normal(size=(900, 2)))
    gmm = metrics.LatentGMM.fit(codes, n_components=3)
    np.testing.assert_allclose(gmm.mixture.means_[np.argsort(gmm.mixture.means_[:, 0])], centres, atol=0.1)
    np.testing.assert_allclose(gmm.mixture.weights_, 1 / 3, atol=0.06)

    z = gmm.sample(3000, seed=1)
    assert gmm.mixture.random_state == 0  # sampling leaves the mixture's own seed (the fit's) as it was
    nearest = torch.cdist(z.double(), torch.from_numpy(centres)).min(1)
    assert z.dtype == torch.float32 and (nearest.values < 1.5).all()
    first_hundred = nearest.indices[:100].bincount(minlength=3)
    assert (first_hundred > 15).all()  # shuffled: not sklearn's component-by-component order

    gmm.save(tmp_path / "latent_gmm.pt")
    loaded = metrics.LatentGMM.load(tmp_path / "latent_gmm.pt")
    assert torch.equal(loaded.sample(500, seed=7), gmm.sample(500, seed=7))
    assert not torch.equal(gmm.sample(500, seed=7), gmm.sample(500, seed=8))
    torch.testing.assert_close(loaded.log_prob(z), gmm.log_prob(z))


def test_latent_gmm_on_a_vae_fits_posterior_means_and_decodes(trained_tiny, digits):
    model, _ = trained_tiny
    gmm = metrics.fit_latent_gmm(model, digits[0], n_components=4, covariance_type="diag", seed=0, batch_size=100)
    mu, _ = metrics.encode(model, digits[0])
    refit = metrics.LatentGMM.fit(mu, n_components=4, covariance_type="diag", seed=0)
    np.testing.assert_allclose(gmm.mixture.means_, refit.mixture.means_, rtol=1e-6)
    samples = metrics.decode(model, gmm.sample(30), batch_size=7)
    assert samples.shape == (30, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    assert (metrics.paper_gmm_components("mnist"), metrics.paper_gmm_components("celeba")) == (20, 100)


def test_a_kept_gmm_fit_is_found_again_only_for_the_same_model_images_and_settings(trained_tiny, digits, tmp_path):
    import copy

    model, _ = trained_tiny
    fit = metrics.fit_latent_gmm(model, digits[0], 4, "diag", keep_in=tmp_path)
    kept = list(tmp_path.iterdir())
    assert len(kept) == 1
    again = metrics.fit_latent_gmm(model, digits[0], 4, "diag", keep_in=tmp_path)  # loaded, not refitted
    assert list(tmp_path.iterdir()) == kept and torch.equal(again.sample(50, seed=1), fit.sample(50, seed=1))
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    metrics.fit_latent_gmm(other, digits[0], 4, "diag", keep_in=tmp_path)  # other weights
    metrics.fit_latent_gmm(model, digits[0][:-1], 4, "diag", keep_in=tmp_path)  # other images
    metrics.fit_latent_gmm(model, digits[0], 3, "diag", keep_in=tmp_path)  # other settings
    assert len(list(tmp_path.iterdir())) == 4
    kept[0].write_bytes(b"damaged")  # a damaged file is fitted again and replaced
    refit = metrics.fit_latent_gmm(model, digits[0], 4, "diag", keep_in=tmp_path)
    assert torch.equal(refit.sample(50, seed=1), fit.sample(50, seed=1))
    assert metrics.LatentGMM.load(kept[0]).mixture.n_components == 4


def test_latent_statistics_count_variables_whose_mean_ignores_the_image(tiny_config, digits):
    from dataclasses import replace

    model = VAE(replace(tiny_config, latent_dim=4)).eval()
    with torch.no_grad():
        model.encoder.to_mu.weight[[1, 3]] = 0.0  # mu_1 and mu_3 are constants: inactive by construction
        model.encoder.to_mu.weight[[0, 2]] *= 100.0  # mu_0 and mu_2 vary a lot
    stats = metrics.latent_statistics(model, digits[0], batch_size=100)
    assert stats.inactive.tolist() == [False, True, False, True] and stats.num_inactive == 2

    with torch.no_grad():
        mu, logvar = (t.double().numpy() for t in model.encode(digits[0]))
    np.testing.assert_allclose(stats.mean_variance, mu.var(0), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(stats.posterior_variance, np.exp(logvar).mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats.variance_law, mu.var(0) + np.exp(logvar).mean(0), rtol=1e-6)
    of_codes = metrics.LatentStatistics.of_codes(*metrics.encode(model, digits[0], batch_size=100))  # encoded once
    assert torch.equal(of_codes.mean_variance, stats.mean_variance) and of_codes.num_inactive == 2
    assert torch.equal(of_codes.posterior_variance, stats.posterior_variance)


# ---------------------------------------------------------------- log-likelihood


class LinearGaussian(nn.Module):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, gamma I): log p(x) = log N(x; b, W W^T + gamma I) is exact.

    W has orthogonal columns, so the exact posterior N(A^{-1} W^T (x - b), gamma A^{-1}) with A = W^T W + gamma I
    is diagonal, and an encoder can match it exactly, or be made wrong on purpose by `mean_error` and `scale`.
    """

    def __init__(self, gamma=0.1, mean_error=0.0, scale=1.0):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(4, 2, dtype=torch.float64))
        self.W, self.b, self.gamma = q * torch.tensor([2.0, 0.7], dtype=torch.float64), torch.randn(4).double(), gamma
        self.A = self.W.T @ self.W + gamma * torch.eye(2, dtype=torch.float64)  # diagonal
        self.mean_error, self.scale = mean_error, scale
        self.prior = StandardNormalPrior(2)

    def encode(self, x):
        mu = torch.linalg.solve(self.A, self.W.T @ (x.flatten(1) - self.b).T).T + self.mean_error
        logvar = torch.log(self.gamma / torch.diag(self.A)).expand_as(mu) + 2 * math.log(self.scale)
        return mu, logvar

    def decode(self, z):
        return (z @ self.W.T + self.b).view(-1, 1, 2, 2)

    def log_px(self, x):
        cov = self.W @ self.W.T + self.gamma * torch.eye(4, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x.flatten(1))


def test_exact_posterior_makes_both_bounds_equal_log_px():
    model = LinearGaussian()
    x = model.decode(torch.randn(50, 2, dtype=torch.float64)) + 0.3 * torch.randn(50, 1, 2, 2, dtype=torch.float64)
    for k in (1, 5):
        bounds = metrics.log_likelihood_bounds(model, x, metrics.gaussian_log_likelihood(model.gamma), k, device="cpu")
        torch.testing.assert_close(bounds.elbo, model.log_px(x))
        torch.testing.assert_close(bounds.iwae, model.log_px(x))


def test_importance_weighting_tightens_towards_log_px_with_a_wrong_posterior():
    model = LinearGaussian(mean_error=0.3, scale=1.5)
    x = model.decode(torch.randn(400, 2, dtype=torch.float64)) + 0.3 * torch.randn(400, 1, 2, 2, dtype=torch.float64)
    likelihood, log_px = metrics.gaussian_log_likelihood(model.gamma), model.log_px(x).mean().item()
    iwae = [metrics.log_likelihood_bounds(model, x, likelihood, k, batch_size=4096, device="cpu").iwae.mean().item()
            for k in (1, 4, 16, 64, 1024)]
    assert all(a < b for a, b in zip(iwae, iwae[1:]))
    assert abs(log_px - iwae[-1]) < 0.02 * (log_px - iwae[0])  # 1024 samples close almost all of the gap


def test_iwae_is_above_the_elbo_and_grows_with_k_on_a_tiny_vae(trained_tiny, digits):
    model, gamma = trained_tiny
    likelihood, x = metrics.gaussian_log_likelihood(gamma), digits[1]
    torch.manual_seed(0)
    bounds = {k: metrics.log_likelihood_bounds(model, x, likelihood, k, batch_size=256) for k in (1, 4, 16, 64)}
    assert torch.equal(bounds[1].elbo, bounds[1].iwae)  # one sample: the log-sum-exp of one term is the term
    for b in bounds.values():
        assert (b.iwae >= b.elbo - 1e-4).all()  # Jensen, up to float32 rounding
    means = [bounds[k].iwae.mean().item() for k in (1, 4, 16, 64)]
    assert all(a < b for a, b in zip(means, means[1:]))
    dims = x[0].numel()
    assert metrics.bits_per_dim(bounds[64].iwae, dims) < metrics.bits_per_dim(bounds[64].elbo, dims)
    bernoulli = metrics.log_likelihood_bounds(model, x, metrics.bernoulli_log_likelihood, 16)  # any likelihood
    assert torch.isfinite(bernoulli.iwae).all() and (bernoulli.iwae >= bernoulli.elbo - 1e-4).all()

    # The K-sample ELBO estimate agrees with E_q[log p(x|z)] - KL(q||p), KL in closed form.
    with torch.no_grad():
        mu, logvar = model.encode(x)
        z = mu + torch.randn(64, *mu.shape) * torch.exp(0.5 * logvar)
        reconstruction = likelihood(x.expand(64, *x.shape).flatten(0, 1), model.decode(z.flatten(0, 1)))
        elbo = reconstruction.view(64, -1).mean(0) - gaussian_kl(mu, logvar)
    assert bounds[64].elbo.mean().item() == pytest.approx(elbo.mean().item(), abs=0.5)


def test_bits_per_dim_and_the_8_bit_scale():
    log_px = torch.full((3,), -784 * math.log(2) * 1.5)  # 1.5 bits per dimension on [0,1]
    assert metrics.bits_per_dim(log_px, 784) == pytest.approx(1.5)
    # the same density on k = 255 x, k = 0..255: divided by 255^D, i.e. log2(255) more bits per dimension
    x = torch.rand(784, dtype=torch.float64)
    density_01 = torch.distributions.Normal(torch.tensor(0.5, dtype=torch.float64), 0.1).log_prob(x).sum()
    density_k = torch.distributions.Normal(torch.tensor(0.5 * 255, dtype=torch.float64), 0.1 * 255).log_prob(255 * x).sum()
    assert metrics.bits_per_dim(density_01.view(1), 784, levels=256) == pytest.approx(
        metrics.bits_per_dim(density_k.view(1), 784), rel=1e-12)
