import math

import pytest
import torch

from vaelab.nn.densenet import data_dependent_init
from vaelab.priors import MixtureOfGaussians, RealNVP, StandardNormal, squeeze, unsqueeze


def perturbed_realnvp(shape, scales):
    """A small RealNVP in float64, initialised on data and then moved away from the identity it starts near."""
    torch.manual_seed(0)
    flow = RealNVP(shape, scales=scales, growth=4, steps=1).double()
    with data_dependent_init(flow):
        flow.log_prob(torch.randn(8, *shape, dtype=torch.float64))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


def autograd_jacobian(flow, u):
    """d flow(u) / du, D x D, by autograd (all rows in one vectorised pass)."""
    return torch.autograd.functional.jacobian(lambda t: flow(t.view(1, *u.shape))[0].flatten(), u.flatten(),
                                              vectorize=True)


@pytest.mark.parametrize("scales", [1, 2])
def test_realnvp_inverse_undoes_forward_and_logdet_equals_the_autograd_jacobian(scales):
    shape = (2, 4, 4)
    flow = perturbed_realnvp(shape, scales)
    u = torch.randn(3, *shape, dtype=torch.float64)
    v, log_det = flow(u)
    assert torch.allclose(flow.inverse(v), u, atol=1e-10)
    for i in range(len(u)):
        sign, log_abs_det = torch.linalg.slogdet(autograd_jacobian(flow, u[i]))
        assert sign > 0 and torch.allclose(log_det[i], log_abs_det, atol=1e-8)
    assert abs(log_det).max() > 0.1  # the check is not trivial: the flow is far from the identity


def test_realnvp_log_prob_is_change_of_variables_and_samples_have_the_shape():
    flow = perturbed_realnvp((2, 4, 4), 2)
    u = torch.randn(5, 2, 4, 4, dtype=torch.float64)
    v, log_det = flow(u)
    assert torch.allclose(flow.log_prob(u), -0.5 * (v**2 + math.log(2 * math.pi)).flatten(1).sum(1) + log_det)
    assert flow.sample(3).shape == (3, 2, 4, 4)


def test_realnvp_refuses_latents_it_cannot_squeeze():
    with pytest.raises(ValueError, match="divisible"):
        RealNVP((4, 7, 7), scales=2)


def test_squeeze_round_trip_and_patch_layout():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    s = squeeze(x)
    assert s.shape == (2, 12, 2, 3)
    assert s[0, 4 * 1 + 2 * 1 + 0, 1, 2] == x[0, 1, 3, 4]  # channel 4c + 2i + j holds pixel (2h + i, 2w + j)
    assert torch.equal(unsqueeze(s), x)


def test_standard_normal_and_mixture_against_torch_distributions():
    u = torch.randn(6, 2, 3, 3)
    reference = torch.distributions.Normal(0.0, 1.0).log_prob(u).flatten(1).sum(1)
    assert torch.allclose(StandardNormal((2, 3, 3)).log_prob(u), reference, atol=1e-5)

    mog = MixtureOfGaussians((2, 3, 3), components=4)
    with torch.no_grad():
        mog.log_vars.normal_(0, 0.3)
        mog.logits.normal_()
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=mog.logits),
        torch.distributions.Independent(torch.distributions.Normal(mog.means, (0.5 * mog.log_vars).exp()), 1))
    assert torch.allclose(mog.log_prob(u), mixture.log_prob(u.flatten(1)), atol=1e-4)
    assert mog.sample(7).shape == (7, 2, 3, 3)
