import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from vaelab import VAE, BalancedGaussianELBO, BernoulliELBO, GammaBalance
from vaelab.losses import bernoulli_nll, gaussian_kl, gaussian_nll, squared_error


def test_gaussian_kl_matches_torch_distributions():
    mu, logvar = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)


def test_gaussian_kl_matches_monte_carlo():
    mu, logvar = torch.tensor([[0.7, -1.2]], dtype=torch.float64), torch.tensor([[-0.5, 0.3]], dtype=torch.float64)
    q, p = Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)
    z = q.sample((400_000,))
    estimate = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean()
    assert abs(estimate.item() - gaussian_kl(mu, logvar).item()) < 0.01


def test_gaussian_nll_is_the_negative_normal_log_density():
    x, x_hat = torch.rand(3, 1, 4, 4, dtype=torch.float64), torch.rand(3, 1, 4, 4, dtype=torch.float64)
    expected = -Normal(x_hat, math.sqrt(0.02)).log_prob(x).flatten(1).sum(-1)
    torch.testing.assert_close(gaussian_nll(x, x_hat, 0.02), expected)
    torch.testing.assert_close(squared_error(x, x_hat), ((x - x_hat) ** 2).sum((1, 2, 3)))


def test_bernoulli_nll_matches_torch_distributions():
    x = torch.randint(0, 2, (4, 1, 3, 3)).double()
    probs = torch.rand(4, 1, 3, 3, dtype=torch.float64).clamp(0.01, 0.99)
    expected = -Bernoulli(probs=probs).log_prob(x).flatten(1).sum(-1)
    torch.testing.assert_close(bernoulli_nll(x, probs), expected)


def test_gamma_is_the_running_mse_and_never_increases():
    balance, mse_run, gamma = GammaBalance(), 1.0, 1.0
    batch_mses = [0.5, 0.2, 0.9, 0.05, 2.0, 0.01]
    for mse in batch_mses:
        balance.update(mse)
        mse_run = 0.99 * mse_run + 0.01 * mse
        new_gamma = min(mse_run, gamma)
        assert new_gamma <= gamma
        gamma = new_gamma
        assert float(balance.gamma) == pytest.approx(gamma) and float(balance.mse_run) == pytest.approx(mse_run)
    restored = GammaBalance()
    restored.load_state_dict(balance.state_dict())
    assert restored.state_dict() == balance.state_dict()


def test_balanced_elbo_terms(tiny_config):
    model = VAE(tiny_config).double()
    x = torch.rand(6, 1, 8, 8, dtype=torch.float64)
    objective = BalancedGaussianELBO(beta=8.0, gamma=GammaBalance(initial=0.1))
    torch.manual_seed(1)
    terms = objective(model, x)
    torch.manual_seed(1)
    out = model(x)
    sse = ((x - out.x_hat) ** 2).sum((1, 2, 3))
    torch.testing.assert_close(terms["rec"], (sse / (2 * 0.1)).mean())
    torch.testing.assert_close(terms["kl"], gaussian_kl(out.mu, out.logvar).mean())
    torch.testing.assert_close(terms["loss"], terms["rec"] + 8.0 * terms["kl"])
    torch.testing.assert_close(terms["mse"], sse.mean() / 64)


@pytest.mark.parametrize("objective", [BalancedGaussianELBO, BernoulliELBO])
def test_a_negative_kl_weight_is_refused(objective):
    with pytest.raises(ValueError, match="beta must be >= 0"):
        objective(beta=-1.0)


@pytest.mark.parametrize("objective", [BalancedGaussianELBO, BernoulliELBO])
def test_8_bit_and_nan_images_are_refused_by_the_objectives(objective, tiny_config):
    with pytest.raises(ValueError, match="divide by 255"):
        objective()(VAE(tiny_config), torch.rand(4, 1, 8, 8) * 255)
    with pytest.raises(ValueError, match="NaN"):
        objective()(VAE(tiny_config), torch.full((4, 1, 8, 8), float("nan")))
