import math

import pytest
import torch

from vaelab import TrainConfig, fit, metrics
from vaelab.data import load
from vaelab.distributions import dmol_channels, dmol_log_prob, dmol_pixel_log_prob, dmol_sample, normal_log_prob
from vaelab.losses import SelfSupervisedELBO
from vaelab.nn.densenet import WeightNormConv
from vaelab.self_supervised_modes import MODES, transmit
from vaelab.self_supervised_vae import PRESETS, SelfSupervisedVAE, SelfSupervisedVAEConfig
from vaelab.transforms import is_8bit, quantize

# 8x8 digits, 8 -> 4 -> 2, latents 2 x 2 x 2, networks of growth 2 and one step: every kind of layer, in milliseconds
TINY = dict(image_size=8, in_channels=1, latent_channels=2, latent_size=2, n_mix=2, prior="standard_normal",
            prior_options=(), top_encoder=(2, 1), top_decoder=(2, 1), encoder=(2, 1), prior_image=(2, 1),
            prior_latent=(2, 1, 1), prior_core=(2, 1, 1), decoder_latent=(2, 1), decoder_core=(2, 1, 1))
VARIANTS = {"vae": (), "two_level": ("downscale",), "three_level": ("downscale", "downscale"), "sketch": ("sketch",)}
LEVELS = torch.arange(256, dtype=torch.float64) / 255


@pytest.fixture(scope="module")
def digits():
    return quantize(load("digits", "train").images[:200])  # 17 grey levels -> the nearest of 256


def tiny(transforms, **changes):
    torch.manual_seed(0)
    return SelfSupervisedVAE(SelfSupervisedVAEConfig(**{**TINY, "transforms": transforms, **changes}))


def random_params(channels, n_mix, pixels, seed=0):
    """Mixture parameters spanning the edge cases: means outside [0,1], scales from far below a bin to wide."""
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(1, dmol_channels(channels, n_mix), 1, pixels, generator=g, dtype=torch.float64)
    k = n_mix
    params[:, k:k + channels * k] = params[:, k:k + channels * k] * 0.6 + 0.5  # means around the range
    params[:, k + channels * k:k + 2 * channels * k] = torch.empty(1, channels * k, 1, pixels).uniform_(
        -9, 0, generator=g)  # log-scales, some below the clamp at -7
    return params


def test_discretized_logistic_grey_levels_sum_to_one_for_every_pixel():
    params = random_params(1, 3, pixels=40)
    x = LEVELS.view(256, 1, 1, 1).expand(256, 1, 1, 40)
    p = dmol_pixel_log_prob(x, params.expand(256, -1, -1, -1), 3).exp()  # 256 x 1 x 40
    assert torch.allclose(p.sum(0), torch.ones(1, 40, dtype=torch.float64), atol=1e-6)


def test_discretized_logistic_colour_triples_sum_to_one():
    """All 256^3 (red, green, blue) triples of one pixel, two components, with the channel coupling: 16.7 million
    probabilities. The triples lie along height and width, one pixel's parameters broadcast over them."""
    params = random_params(3, 2, pixels=1, seed=1).float()
    levels = LEVELS.float()
    green_blue = torch.cartesian_prod(levels, levels)  # every (green, blue) pair
    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for reds in levels.split(32):
            x = torch.stack([reds[:, None].expand(-1, len(green_blue)), green_blue[:, 0].expand(len(reds), -1),
                             green_blue[:, 1].expand(len(reds), -1)]).unsqueeze(0)  # 1 x 3 x 32 x 65,536
            total += dmol_pixel_log_prob(x, params, 2).double().exp().sum()
    assert abs(total.item() - 1) < 1e-5


def test_full_sampling_follows_the_probabilities_and_argmax_is_the_likeliest_component_mean():
    params = random_params(1, 3, pixels=1, seed=2)
    params[:, 6:9] = -2.5  # scales of e^-2.5: a few levels wide
    probabilities = dmol_pixel_log_prob(LEVELS.view(256, 1, 1, 1), params.expand(256, -1, -1, -1), 3).exp().view(256)
    torch.manual_seed(0)
    draws = dmol_sample(params.expand(20_000, -1, -1, -1), 1, 3, how="sample").view(-1)
    frequencies = torch.bincount((draws * 255).round().long(), minlength=256).double() / len(draws)
    # Kolmogorov distance of 20,000 draws; 0.0138 is the 0.1% critical value of the KS test
    assert (frequencies.cumsum(0) - probabilities.cumsum(0)).abs().max() < 0.0138
    likeliest = params[0, :3, 0, 0].argmax()
    assert dmol_sample(params, 1, 3).item() == quantize(params[0, 3 + likeliest, 0, 0].clamp(0, 1)).item()
    assert is_8bit(dmol_sample(random_params(3, 2, 5).float(), 3, 2, how="sample"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_terms_are_finite_and_the_importance_weighted_bound_is_at_least_the_elbo(variant, digits):
    model = tiny(VARIANTS[variant])
    model.initialize(digits[:50])
    terms = SelfSupervisedELBO()(model, digits[:50])
    assert all(torch.isfinite(v) for v in terms.values())
    assert (terms["re_y"] == 0) == (variant == "vae")
    bounds = metrics.log_likelihood_bounds(model, digits[:20], k=16)
    assert bounds.iwae.shape == (20,) and torch.all(bounds.iwae >= bounds.elbo)


def test_two_level_elbo_equals_an_independent_computation(digits):
    """ELBO = log p(x|y,z) + log p(y|u) + log p(z|y,u) + log p(u) - log q(z|x) - log q(u|y), with torch.distributions
    for every Gaussian and the same noise."""
    model = tiny(("downscale",))
    model.initialize(digits[:50])
    x = digits[:10]
    torch.manual_seed(3)
    out = model.infer(x)
    y = torch.nn.functional.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True)
    y = quantize(y)
    torch.manual_seed(3)
    normal = torch.distributions.Normal
    mu_u, logvar_u = model.q_u(y)
    u = mu_u + (0.5 * logvar_u).exp() * torch.randn_like(mu_u)
    mu_z, logvar_z = model.q_z(1, x)
    z = mu_z + (0.5 * logvar_z).exp() * torch.randn_like(mu_z)
    mu_p, logvar_p = model.p_z(1, y, u)

    def log_n(v, mu, logvar):
        return normal(mu, (0.5 * logvar).exp()).log_prob(v).flatten(1).sum(1)

    elbo = (dmol_log_prob(x, model.p_y_params(1, y, z), 2) + dmol_log_prob(y, model.p_y1_params(u), 2)
            + log_n(z, mu_p, logvar_p) + normal(0, 1).log_prob(u).flatten(1).sum(1)
            - log_n(z, mu_z, logvar_z) - log_n(u, mu_u, logvar_u))
    assert torch.allclose(out.elbo, elbo, atol=1e-3)
    assert torch.allclose(out.kl_z, log_n(z, mu_z, logvar_z) - log_n(z, mu_p, logvar_p), atol=1e-4)
    assert torch.allclose(normal_log_prob(z, mu_z, logvar_z), log_n(z, mu_z, logvar_z), atol=1e-4)


def test_data_dependent_init_gives_outputs_of_std_001(digits):
    model = tiny(("downscale",))
    layer = model.levels[0].encoder[0].blocks[0].bottleneck  # the first conv to see x
    model.initialize(digits[:50])
    out = layer.conv(digits[:50])
    assert torch.allclose(out.std(dim=(0, 2, 3)), torch.full((layer.out_channels,), 0.01), rtol=0.02)
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert all(not m.init_pending for m in model.modules() if isinstance(m, WeightNormConv))


@pytest.mark.parametrize("variant", ["two_level", "three_level", "sketch"])
def test_every_mode_returns_images_and_what_it_transmits(variant, digits):
    model = tiny(VARIANTS[variant])
    model.initialize(digits[:50])
    x = digits[:4]
    k = len(VARIANTS[variant])
    y_name, z_names = ("y", ["z"]) if k == 1 else (f"y_{k}", [f"z_{i}" for i in range(1, k + 1)])
    y_dims = model.image_shapes[-2]
    expected = {"generation": {}, "conditional_generation": {y_name: y_dims},
                "conditional_reconstruction": {y_name: y_dims, z_names[-1]: model.latent_shape},
                "reconstruction_1": {"u": model.latent_shape},
                "reconstruction_2": {"u": model.latent_shape, **{z: model.latent_shape for z in z_names}}}
    out = {mode: transmit(model, mode, x) for mode in MODES}
    for mode, result in out.items():
        assert result.images.shape == x.shape and is_8bit(result.images)
        assert [tuple(level.shape[1:]) for level in result.pyramid] == model.image_shapes
        assert {name: tuple(t.shape[1:]) for name, t in result.sent.items()} == expected[mode]
        assert result.bits_model.shape == result.bits_raw.shape == (4,)
    assert torch.all(out["generation"].bits_raw == 0)
    raw_y = 8 * math.prod(y_dims)
    assert torch.all(out["conditional_generation"].bits_raw == raw_y)
    for mode in ("reconstruction_1", "reconstruction_2"):
        assert torch.equal(out[mode].bits_model, out[mode].bits_raw)  # no image is sent
    assert torch.equal(out["conditional_generation"].pyramid[-2], model.transform(x)[-2])  # the true y is used
    torch.manual_seed(0)
    sampled = model.sample(3)
    torch.manual_seed(0)
    assert torch.equal(sampled, transmit(model, "generation", n=3).images)  # sample is the generation mode


def test_the_plain_vae_has_no_conditional_modes(digits):
    model = tiny(())
    with pytest.raises(ValueError, match="no y"):
        transmit(model, "conditional_generation", digits[:2])
    assert transmit(model, "reconstruction_1", digits[:2]).sent.keys() == {"u"}


def test_clear_errors_for_images_the_likelihood_cannot_score(digits):
    model = tiny(("downscale",))
    with pytest.raises(ValueError, match="8-bit"):
        model.infer(digits[:2] * 0.999)
    with pytest.raises(ValueError, match="N x 1 x 8 x 8"):
        model.infer(torch.zeros(2, 1, 6, 6))
    with pytest.raises(ValueError, match="power of 2"):
        SelfSupervisedVAEConfig(**{**TINY, "latent_size": 3})


def test_presets_build_and_the_quick_ones_match_their_pyramids():
    assert [s[-1] for s in SelfSupervisedVAE(PRESETS["quick_3level"]).image_shapes] == [7, 14, 28]
    with torch.device("meta"):
        full = SelfSupervisedVAE(PRESETS["cifar10_2level"])
    assert full.image_shapes == [(3, 16, 16), (3, 32, 32)]


def test_the_papers_cifar10_networks_have_the_papers_size():
    """srVAE's networks and RealNVP prior: the paper reports 32M to 42M parameters for its models."""
    from vaelab.recipes import self_supervised_paper
    for variant in ("vae", "2level"):
        with torch.device("meta"):
            model = SelfSupervisedVAE(self_supervised_paper(variant).recipe.model)
        assert 32e6 <= sum(p.numel() for p in model.parameters()) <= 42e6


def test_resumed_run_through_fit_equals_an_uninterrupted_one(digits, tmp_path):
    config = TrainConfig(batch_size=50, optimizer="adamax", lr=2e-3, eps=1e-7, lr_decay=0.99, min_lr=1e-3,
                         progress=False)

    def run(epochs, checkpoint=None):
        model = tiny(("downscale",))
        history = fit(model, SelfSupervisedELBO(), digits[:100], TrainConfig(**{**config.__dict__, "epochs": epochs,
                                                                               "checkpoint": checkpoint}))
        return model, history

    straight_model, straight = run(3)
    ckpt = str(tmp_path / "run.pt")
    run(1, ckpt)
    resumed_model, resumed = run(3, ckpt)  # a fresh model: fit must not re-initialise it from data
    assert resumed["loss"] == straight["loss"]
    for a, b in zip(straight_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)
    assert straight.epochs["loss"][-1] < straight.epochs["loss"][0]


def test_modes_explorer_holds_a_picture_per_image_and_mode_switched_in_the_browser(digits):
    from ipywidgets.embed import dependency_state

    from vaelab import viz
    model = tiny(("downscale",))
    model.initialize(digits[:50])
    state = dependency_state(viz.modes_explorer(model, digits[:3]))
    by_name = {}
    for model_id, m in state.items():
        by_name.setdefault(m["model_name"], []).append((model_id, m["state"]))
    assert len(by_name["ImageModel"]) == 3 * (1 + len(MODES))  # the truth and the five modes, per image
    description = {model_id: m["state"].get("description") for model_id, m in state.items()}
    links = []
    for _, link in by_name["LinkModel"]:
        (source, trait), (target, target_trait) = link["source"], link["target"]
        target = state[target.removeprefix("IPY_MODEL_")]["state"]
        links.append((description[source.removeprefix("IPY_MODEL_")], trait, target_trait, len(target["children"])))
    assert sorted(links) == sorted([("image", "value", "selected_index", 3)] * 2
                                   + [("mode", "index", "selected_index", len(MODES))] * 3)


def test_colour_likelihood_with_coupling_equals_scipy_channel_by_channel():
    """The cases of chapter 5's colour exercise (scipy.stats.logistic, channel by channel, in float64) through the
    library's one-component mixture, whose coupling coefficients pass through tanh."""
    from vaelab.exercises import EXERCISES
    for (x, means, log_scales, coeffs), expected in EXERCISES["ex-ssvae-colour-code"]():
        params = torch.cat([torch.zeros_like(means[:, :1]), means, log_scales, torch.atanh(coeffs)], dim=1)
        assert torch.allclose(dmol_pixel_log_prob(x, params, 1), torch.from_numpy(expected), atol=1e-10)
