"""Self-checks for the book's coding exercises.

A coding exercise gives the student a function to complete and one line to run:

    def kl_to_standard_normal(m, S):
        ...                                   # the student's code; the stub raises NotImplementedError
    check("ex-elbo-kl-full", kl_to_standard_normal)

`check` calls the student's function on fixed inputs and prints each result beside the expected value. The
expected values are computed *independently* (by another library, by autograd, or by a slower direct method),
never by the exercise's solution; the book's tests run every hidden solution through the same checks.
"""
from collections.abc import Callable

import numpy as np
import scipy.linalg
import scipy.signal
import scipy.special
import scipy.stats
import torch
from sklearn.feature_selection import VarianceThreshold


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_spd(dim: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(dim, dtype=torch.float64)


# ---------------------------------------------------------------- the cases of each exercise: (inputs, expected)


def _elbo_kl_full():
    """KL(N(m, S) || N(0, I)) for a full covariance S, against torch.distributions."""
    g, cases = _generator(0), []
    for dim in (1, 2, 5):
        m, S = torch.randn(dim, generator=g, dtype=torch.float64), _random_spd(dim, g)
        q = torch.distributions.MultivariateNormal(m, S)
        p = torch.distributions.MultivariateNormal(torch.zeros(dim, dtype=torch.float64), torch.eye(dim, dtype=torch.float64))
        cases.append(((m.numpy(), S.numpy()), torch.distributions.kl_divergence(q, p).item()))
    return cases


def _elbo_iwae():
    """log (1/K) sum_k exp(log w_k) per column, against scipy's logsumexp; the weights span hundreds of nats, so
    exponentiating them directly overflows or underflows."""
    rng, cases = np.random.default_rng(1), []
    for scale, shift in ((1.0, 0.0), (30.0, -800.0), (5.0, 750.0)):
        log_w = shift + scale * rng.normal(size=(16, 3))
        cases.append(((log_w,), scipy.special.logsumexp(log_w, axis=0) - np.log(len(log_w))))
    return cases


def _vae_kl_diag():
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per row, against torch.distributions."""
    g = _generator(2)
    mu, logvar = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    expected = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    return [((mu, logvar), expected)]


def _vae_gamma():
    """The final gamma after a sequence of batch MSEs: the running mean by scipy's IIR filter, then the running
    minimum by numpy, instead of the step-by-step update the exercise asks for."""
    rng, cases = np.random.default_rng(3), []
    for decay in (0.99, 0.9):
        mses = np.exp(-np.linspace(0, 3, 200)) * (1 + 0.3 * rng.normal(size=200)) ** 2
        # m_t = decay m_{t-1} + (1 - decay) mse_t with m_0 = 1: a first-order filter with initial state
        running, _ = scipy.signal.lfilter([1 - decay], [1, -decay], mses, zi=[decay * 1.0])
        expected = float(np.minimum.accumulate(np.concatenate([[1.0], running]))[-1])
        cases.append(((mses.tolist(), decay), expected))
    return cases


def _eval_frechet():
    """The Frechet distance between two Gaussians, with scipy's general matrix square root (pytorch-fid's way)."""
    g, cases = _generator(4), []
    for dim in (1, 3, 8):
        m1, m2 = (torch.randn(dim, generator=g, dtype=torch.float64).numpy() for _ in range(2))
        c1, c2 = _random_spd(dim, g).numpy(), _random_spd(dim, g).numpy()
        covmean = scipy.linalg.sqrtm(c1 @ c2).real
        expected = float(np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean))
        cases.append(((m1, c1, m2, c2), expected))
    return cases


def _eval_inactive():
    """How many latent variables have Var_x[mu_j] < threshold, with scikit-learn's VarianceThreshold, which keeps
    the features whose (population) variance exceeds the threshold."""
    rng, cases = np.random.default_rng(5), []
    for threshold in (0.05, 0.5):
        mu = rng.normal(size=(500, 12)) * np.array([1.0, 0.01, 0.3, 0.1, 2.0, 0.05, 0.2, 0.001, 0.6, 0.15, 1.5, 0.02])
        kept = VarianceThreshold(threshold).fit(mu).get_support()
        cases.append(((mu, threshold), int((~kept).sum())))
    return cases


def _split_blend():
    """sigma x1 + (1 - sigma) x2 with sigma's one channel broadcast over C colours, pixel by pixel with numpy."""
    g = _generator(6)
    sigma, x1, x2 = torch.rand(2, 1, 4, 4, generator=g), torch.rand(2, 3, 4, 4, generator=g), torch.rand(2, 3, 4, 4, generator=g)
    s, a, b = sigma.numpy(), x1.numpy(), x2.numpy()
    expected = np.empty_like(a)
    for n in range(2):
        for c in range(3):
            expected[n, c] = s[n, 0] * a[n, c] + (1 - s[n, 0]) * b[n, c]
    return [((sigma, x1, x2), torch.from_numpy(expected))]


def _split_gradients():
    """dL/dsigma, dL/dx1, dL/dx2 for L = sum(g * x_hat), by autograd, for an upstream gradient g = dL/dx_hat."""
    g = _generator(7)
    sigma, x1, x2 = (torch.rand(2, c, 5, 5, generator=g, dtype=torch.float64, requires_grad=True) for c in (1, 3, 3))
    upstream = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    x_hat = sigma * x1 + (1 - sigma) * x2
    grads = torch.autograd.grad((upstream * x_hat).sum(), (sigma, x1, x2))
    return [((sigma.detach(), x1.detach(), x2.detach(), upstream), tuple(grads))]


def _ssvae_colour():
    """log P(r, g, b) of a pixel under one discretized logistic per channel with PixelCNN++'s coupling of the
    means (mu_G + c_0 r, mu_B + c_1 r + c_2 g), channel by channel with scipy.stats.logistic in float64. Values
    are drawn a few scales from their coupled means, where a plain difference of CDFs is accurate."""
    rng, cases, half = np.random.default_rng(8), [], 0.5 / 255
    for mean_low, mean_high in ((0.2, 0.8), (-0.05, 0.05), (0.95, 1.05)):  # interior, then both end bins
        shape = (2, 3, 3, 3)  # N x C x H x W
        mean = rng.uniform(mean_low, mean_high, size=shape)
        scale = np.exp(rng.uniform(-4, -1.5, size=shape))
        coeffs = rng.uniform(-0.3, 0.3, size=shape)  # c_0, c_1, c_2 along the channel axis
        x, centre, log_p = np.empty(shape), np.empty(shape), 0.0
        for c in range(3):
            centre[:, c] = mean[:, c] + (coeffs[:, 0] * x[:, 0] if c == 1 else 0) \
                + (coeffs[:, 1] * x[:, 0] + coeffs[:, 2] * x[:, 1] if c == 2 else 0)
            x[:, c] = np.clip(np.round((centre[:, c] + scale[:, c] * rng.normal(size=shape[:1] + shape[2:])) * 255),
                              0, 255) / 255
            upper = np.where(x[:, c] > 1 - half, 1.0, scipy.stats.logistic.cdf(x[:, c] + half, centre[:, c], scale[:, c]))
            lower = np.where(x[:, c] < half, 0.0, scipy.stats.logistic.cdf(x[:, c] - half, centre[:, c], scale[:, c]))
            log_p = log_p + np.log(upper - lower)
        inputs = tuple(torch.from_numpy(a) for a in (x, mean, np.log(scale), coeffs))
        cases.append((inputs, log_p))
    return cases


def _ssvae_coupling_inverse():
    """x back from y = b x + (1 - b) (x + t(b x)) exp(s(b x)): the x that made y is known, so it is the answer."""
    g, cases = _generator(9), []
    for parity in (0, 1):
        weight = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64) * 0.3

        def conditioner(x_masked, weight=weight):  # a fixed random network: (s, t)
            s, t = torch.nn.functional.conv2d(x_masked, weight, padding=1).chunk(2, dim=1)
            return torch.tanh(s), t

        rows, cols = torch.arange(6)[:, None], torch.arange(6)[None, :]
        mask = ((rows + cols) % 2 == parity).double()[None, None]
        x = torch.randn(3, 2, 6, 6, generator=g, dtype=torch.float64)
        s, t = conditioner(x * mask)
        y = mask * x + (1 - mask) * (x + t) * s.exp()
        cases.append(((y, conditioner, mask), x))
    return cases


def _howto_full_kl():
    """KL(N(batch mean, biased batch covariance of mu) || N(0, I)), by torch.distributions from numpy's moments, on
    batches whose latent variables are correlated."""
    g, cases = _generator(10), []
    for batch, dim in ((16, 3), (100, 8)):
        mixing = torch.randn(dim, dim, generator=g, dtype=torch.float64)
        mu = torch.randn(batch, dim, generator=g, dtype=torch.float64) @ mixing + 0.5
        mean, covariance = mu.numpy().mean(0), np.cov(mu.numpy(), rowvar=False, bias=True)
        q = torch.distributions.MultivariateNormal(torch.from_numpy(mean), torch.from_numpy(covariance))
        p = torch.distributions.MultivariateNormal(torch.zeros(dim, dtype=torch.float64),
                                                   torch.eye(dim, dtype=torch.float64))
        cases.append(((mu,), torch.distributions.kl_divergence(q, p)))
    return cases


def _howto_patch_geometry():
    """(side of the input window one output of a conv stack sees, shift between the windows of two neighbouring
    outputs), by autograd: with all-ones kernels, the gradient of an output is positive exactly on its window."""
    cases = []
    for kernels, strides in (((3, 3, 3), (2, 2, 1)), ((3,) * 6, (2, 2, 2, 1, 1, 1)), ((4, 4, 4, 4), (2, 2, 2, 1)),
                             ((5, 3), (3, 2))):
        stack = torch.nn.Sequential(*[torch.nn.Conv2d(1, 1, k, stride=s, bias=False) for k, s in zip(kernels, strides)])
        for conv in stack:
            torch.nn.init.ones_(conv.weight)
        windows = []
        for offset in (0, 1):  # a central output and its neighbour one row further
            x = torch.zeros(1, 1, 160, 160, requires_grad=True)
            y = stack(x)
            y[0, 0, y.shape[-2] // 2 + offset, y.shape[-1] // 2].backward()
            windows.append((x.grad[0, 0].sum(1) > 0).nonzero())
        side = int(windows[0].max() - windows[0].min() + 1)
        cases.append(((list(kernels), list(strides)), (side, int(windows[1].min() - windows[0].min()))))
    return cases


def _results_concordance():
    """The fraction of pairs of methods two lists of scores order alike, from scipy's Kendall tau: without ties,
    tau = (agreeing - reversed pairs) / all pairs, so the fraction is (tau + 1) / 2."""
    rng, cases = np.random.default_rng(11), []
    for n in (3, 6, 11):
        ours, theirs = rng.normal(size=n), rng.normal(size=n)
        for other in (theirs, 3 * ours + 1, -ours):  # a random ranking, the same one, the reversed one
            tau = scipy.stats.kendalltau(ours, other)[0]
            cases.append(((ours.tolist(), other.tolist()), (tau + 1) / 2))
    return cases


def _results_implied_bpd():
    """The negative ELBO in bits per dimension implied by the self-supervised VAE paper's RE and KL columns (nats
    per image), as the bits of the per-dimension probability exp(-(RE + KL) / D), with D counted by numpy."""
    cases = []
    for re, kl, shape in ((5540, 1966, (3, 32, 32)), (6348, 1438, (3, 32, 32)), (23336, 1214, (3, 64, 64)),
                          (30809, 1961, (3, 64, 64)), (250, 40, (1, 28, 28))):
        dims = np.zeros(shape).size
        cases.append(((re, kl, shape), float(-np.log2(np.exp(-(re + kl) / dims)))))
    return cases


EXERCISES: dict[str, Callable[[], list]] = {
    "ex-elbo-kl-full": _elbo_kl_full,
    "ex-elbo-iwae": _elbo_iwae,
    "ex-vae-kl-diag": _vae_kl_diag,
    "ex-vae-gamma-code": _vae_gamma,
    "ex-eval-frechet-code": _eval_frechet,
    "ex-eval-inactive-code": _eval_inactive,
    "ex-split-blend-code": _split_blend,
    "ex-split-gradients-code": _split_gradients,
    "ex-ssvae-colour-code": _ssvae_colour,
    "ex-ssvae-coupling-code": _ssvae_coupling_inverse,
    "ex-howto-full-kl-code": _howto_full_kl,
    "ex-howto-patch-geometry-code": _howto_patch_geometry,
    "ex-results-concordance-code": _results_concordance,
    "ex-results-elbo-bpd-code": _results_implied_bpd,
}


# ---------------------------------------------------------------- comparing and reporting


def _as_array(value) -> np.ndarray:
    return value.detach().double().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value, np.float64)


def _agrees(value, expected, rtol: float, atol: float) -> bool:
    if isinstance(expected, tuple):
        return isinstance(value, (tuple, list)) and len(value) == len(expected) and all(
            _agrees(v, e, rtol, atol) for v, e in zip(value, expected))
    got, want = _as_array(value), _as_array(expected)
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=rtol, atol=atol))


def _short(value) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    array = _as_array(value)
    if array.size == 1:
        return f"{array.item():.6g}"
    return f"array {tuple(array.shape)}, first values {np.array2string(array.ravel()[:3], precision=4)}"


def check(label: str, student: Callable, rtol: float = 1e-6, atol: float = 1e-8) -> bool | None:
    """Run the student's function on the exercise's cases; print "your value / expected" for each.

    Returns True when every case agrees, False when one does not, None when the exercise is not done yet (the
    stub raises NotImplementedError or returns None). It never raises for a wrong answer: a chapter runs on.
    """
    if label not in EXERCISES:
        raise KeyError(f"no exercise {label!r}; known: {', '.join(sorted(EXERCISES))}")
    results = []
    for inputs, expected in EXERCISES[label]():
        try:
            value = student(*inputs)
        except NotImplementedError:
            value = None
        if value is None:
            print(f"{label}: not done yet. Complete the function above and run this cell again.")
            return None
        try:
            ok = _agrees(value, expected, rtol, atol)
        except (TypeError, ValueError):  # a value of the wrong kind altogether
            ok = False
        results.append(ok)
        print(f"{'ok ' if ok else 'NO '} your value {_short(value)}   expected {_short(expected)}")
    passed = all(results)
    print(f"{label}: {'all cases agree' if passed else 'some cases disagree'} ({sum(results)} of {len(results)}).")
    return passed
