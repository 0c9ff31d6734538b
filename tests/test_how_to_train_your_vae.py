"""Rivera's "How to train your VAE": the blocks, the model, the loss terms and adversarial training through fit.

Each check compares with a computation that does not use the code under test: torch.distributions for the KL,
autograd-free formulas for gradients and parameter counts, the original's printed Keras summary for the paper's
network, and an uninterrupted run for a resumed one.
"""
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

import vaelab
from vaelab import metrics, viz
from vaelab.how_to_train_your_vae import PRESETS, HowToTrainYourVAE, HowToTrainYourVAEConfig, patchgan
from vaelab.losses import (HowNotToTrainLoss, HowToTrainLoss, discriminator_loss, gaussian_kl,
                           generator_adversarial_loss, global_kl, variance_regulariser)
from vaelab.metrics import adversary_accuracy, keras_parameter_count, patch_accuracy
from vaelab.nn.resnet_v2 import (ConvTriBlockV2, PatchGAN, ResBlockConvTV2, ResBlockConvV2, ResBlockIdV2,
                                 keras_init, upsample_conv)
from vaelab.train import NonFiniteLossError
from tensorflow_reference import tensorflow_same_conv

# 8x8 grey images, two stages (8 -> 2), every kind of layer the paper's network has; a 2-layer PatchGAN (4x4 map).
TINY = HowToTrainYourVAEConfig(image_size=8, in_channels=1, latent_dim=8, filters=4, stages=2,
                               discriminator_filters=(4, 1), discriminator_strides=(2, 1))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These networks are tiny: with two threads, each small op waits on the other thread, and on a busy machine
    the waiting dominates (measured: the resumption test took 28 s with two threads, 2 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(n: int, config: HowToTrainYourVAEConfig = TINY, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, config.in_channels, config.image_size, config.image_size, generator=g)


# ---------------------------------------------------------------- loss terms


def test_global_kl_is_the_kl_of_the_batch_gaussian_of_means():
    mu = torch.randn(64, 5, dtype=torch.float64) * torch.tensor([0.5, 1, 2, 3, 0.1]) + torch.arange(5.0)
    mean = torch.from_numpy(mu.numpy().mean(0))
    std = torch.from_numpy(mu.numpy().std(0))  # numpy's default ddof=0: the biased variance
    expected = kl_divergence(Normal(mean, std), Normal(0.0, 1.0)).sum()
    assert torch.allclose(global_kl(mu), expected, rtol=1e-12)


def test_global_kl_vanishes_for_a_batch_with_mean_0_and_variance_1():
    mu = torch.randn(1000, 3, dtype=torch.float64)
    mu = (mu - mu.mean(0)) / mu.std(0, unbiased=False)
    assert global_kl(mu).abs() < 1e-12


def test_variance_regulariser_pushes_a_collapsing_sigma_back_up():
    logvar = torch.log(torch.tensor([1e-4, 1e-2, 0.5, 1.0, 4.0], dtype=torch.float64)).requires_grad_()
    variance_regulariser(logvar[None]).sum().backward()
    expected_grad = logvar.detach().exp() - 1  # d/dv (e^v - v - 1) = e^v - 1
    assert torch.allclose(logvar.grad, expected_grad)
    assert (logvar.grad[:3] < 0).all() and logvar.grad[3] == 0 and logvar.grad[4] > 0
    # a plain gradient step on a collapsed variance raises it, and steps converge to sigma^2 = 1
    v = torch.tensor([np.log(1e-3)], requires_grad=True)
    history = []
    for _ in range(200):
        v.grad = None
        variance_regulariser(v[None]).sum().backward()
        with torch.no_grad():
            v -= 0.1 * v.grad
        history.append(v.exp().item())
    assert all(b > a for a, b in zip(history, history[1:]))
    assert abs(history[-1] - 1) < 1e-3


def test_adversarial_terms_are_keras_binary_cross_entropies():
    real, fake = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    softplus = torch.nn.functional.softplus  # BCE(l, 1) = softplus(-l), BCE(l, 0) = softplus(l)
    assert torch.allclose(discriminator_loss(real, fake), softplus(-real).mean() + softplus(fake).mean())
    assert torch.allclose(generator_adversarial_loss(fake), softplus(-fake).mean())


def test_how_to_train_loss_adds_the_terms_of_the_original():
    model, x = HowToTrainYourVAE(TINY), images(16)
    adversary = patchgan(TINY)
    objective = HowToTrainLoss(adversary, reconstruction_weight=7.0, global_weight=2.0, variance_weight=0.3,
                               adversarial_weight=5.0)
    adversary.eval()  # dropout off, so that two calls of D agree
    torch.manual_seed(1)
    terms = objective(model, x)
    torch.manual_seed(1)
    out = model(x)
    y, xs = out.x_hat_signed, 2 * x - 1
    m, s2 = out.mu.mean(0), out.mu.var(0, unbiased=False)
    by_hand = (7.0 * (xs - y).abs().mean() + 2.0 * 0.5 * (m**2 + s2 - s2.log() - 1).sum()
               + 0.3 * (out.logvar.exp() - out.logvar - 1).sum(1).mean()
               + 5.0 * nn.functional.softplus(-adversary(y)).mean())
    assert torch.allclose(terms["loss"], by_hand, rtol=1e-5)
    d_by_hand = 5.0 * (nn.functional.softplus(-adversary(xs)).mean() + nn.functional.softplus(adversary(y)).mean())
    assert torch.allclose(terms["adversary_loss"], d_by_hand, rtol=1e-5)
    assert "adversary_loss" not in HowToTrainLoss()(model, x)


def test_how_not_to_train_loss_is_l1_plus_the_standard_kl():
    model, x = HowToTrainYourVAE(TINY), images(16)
    torch.manual_seed(1)
    terms = HowNotToTrainLoss()(model, x)
    torch.manual_seed(1)
    out = model(x)
    kl = kl_divergence(Normal(out.mu, (0.5 * out.logvar).exp()), Normal(0.0, 1.0)).sum(1).mean()
    assert torch.allclose(terms["loss"], 5000 * (2 * x - 1 - out.x_hat_signed).abs().mean() + kl, rtol=1e-5)
    assert torch.allclose(gaussian_kl(out.mu, out.logvar).mean(), kl, rtol=1e-5)


def test_objective_settings_name_the_run():
    d = patchgan(TINY)
    assert HowToTrainLoss(d).settings() == {
        "reconstruction_weight": 5000.0, "global_weight": 1.0, "variance_weight": 0.1, "adversarial_weight": 100.0,
        "adversary": "PatchGAN", "adversary_lr": 1e-4, "adversary_betas": [0.5, 0.999]}
    assert HowToTrainLoss(variance_weight=0).settings()["adversary"] is None
    assert HowNotToTrainLoss().settings() == {"reconstruction_weight": 5000.0, "kl_weight": 1.0}


# ---------------------------------------------------------------- blocks and networks


def test_blocks_keep_halve_and_double_the_size():
    x = torch.randn(2, 6, 8, 8)
    assert ResBlockIdV2(6)(x).shape == (2, 6, 8, 8)
    assert ResBlockConvV2(6, 5)(x).shape == (2, 5, 4, 4)
    assert ResBlockConvTV2(6, 3)(x).shape == (2, 3, 16, 16)


def test_block_parameter_counts():
    def conv(k, c_in, c_out):
        return k * k * c_in * c_out + c_out

    def bn(c):
        return 2 * c  # gain and offset (Keras also counts the 2 running statistics: keras_parameter_count)

    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    tri = bn(6) + conv(3, 6, 5) + bn(5) + conv(3, 5, 5) + bn(5) + conv(1, 5, 5)
    assert count(ConvTriBlockV2(6, 5)) == tri
    assert count(ResBlockIdV2(5)) == bn(5) + conv(3, 5, 5) + bn(5) + conv(3, 5, 5) + bn(5) + conv(1, 5, 5)
    assert count(ResBlockConvV2(6, 5)) == tri + bn(6) + conv(1, 6, 5)
    assert count(ResBlockConvTV2(6, 5)) == bn(6) + conv(1, 6, 5) + bn(5) + conv(3, 5, 5) + bn(6) + conv(3, 6, 5)
    assert count(PatchGAN(3, (4, 2), (2, 1))) == conv(3, 3, 4) + bn(4) + conv(3, 4, 2) + bn(2)


def test_the_paper_network_has_the_original_parameter_counts():
    """The original notebook's Keras summary: VAE 9,932,466, discriminator 412,101, 25,352 non-trainable.

    Keras printed the VAE before its sampler's two Dense layers were built (they are built on the first call),
    so its count leaves them out: 2 x (1024 x 512 + 512) = 1,049,600.
    """
    config = PRESETS["celebahq256"]
    with torch.device("meta"):
        vae, discriminator = HowToTrainYourVAE(config), PatchGAN(3, config.discriminator_filters,
                                                                 config.discriminator_strides)
    sampler = sum(p.numel() for layer in (vae.encoder.to_mu, vae.encoder.to_logvar) for p in layer.parameters())
    assert sampler == 1_049_600
    assert keras_parameter_count(vae) - sampler == 9_932_466
    assert keras_parameter_count(discriminator) == 412_101
    running_statistics = sum(2 * m.num_features for net in (vae, discriminator) for m in net.modules()
                             if isinstance(m, nn.BatchNorm2d))
    assert running_statistics == 25_352


@pytest.mark.parametrize("config, logits", [(PRESETS["quick"], 8), (PRESETS["celeba64"], 8),
                                            (PRESETS["celebahq256"], 32), (TINY, 4)])
def test_discriminator_logit_map_size(config, logits):
    with torch.device("meta"):
        d = patchgan(config)
        out = d(torch.empty(2, config.in_channels, config.image_size, config.image_size))
    assert out.shape == (2, 1, logits, logits)
    assert config.image_size // d.downscale == logits


@pytest.mark.parametrize("size", [16, 24, 40])
def test_discriminator_takes_any_size_divisible_by_its_strides(size):
    d = PatchGAN(1, (4, 4, 1), (2, 2, 1)).eval()
    assert d(torch.randn(1, 1, size, size)).shape == (1, 1, size // 4, size // 4)


def test_patchgan_depends_on_its_seed_alone():
    torch.manual_seed(0)
    a = patchgan(TINY, seed=3)
    state = torch.get_rng_state()
    torch.manual_seed(99)
    b = patchgan(TINY, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    torch.manual_seed(0)
    patchgan(TINY)
    assert torch.equal(torch.get_rng_state(), state)  # building it leaves the global random state alone


def test_keras_init_is_glorot_uniform_with_zero_bias():
    conv = nn.Conv2d(8, 16, 3)
    keras_init(conv)
    limit = np.sqrt(6 / (8 * 9 + 16 * 9))  # glorot: sqrt(6 / (fan_in + fan_out))
    assert conv.weight.abs().max() <= limit and conv.weight.abs().max() > 0.9 * limit
    assert (conv.bias == 0).all()


def test_model_interface_shapes_and_range():
    model, x = HowToTrainYourVAE(TINY), images(5)
    out = model(x)
    assert out.x_hat.shape == x.shape and out.x_hat_signed.shape == x.shape
    assert out.mu.shape == out.logvar.shape == out.z.shape == (5, TINY.latent_dim)
    assert torch.equal(out.x_hat, ((out.x_hat_signed + 1) / 2).clamp(0, 1))
    model.eval()
    far = 50 * torch.randn(20, TINY.latent_dim)  # codes far out, where the linear output overshoots [-1, 1]
    decoded = model.decode(far)
    assert decoded.shape == (20, 1, 8, 8) and decoded.min() >= 0 and decoded.max() <= 1
    assert model.sample(3).shape == (3, 1, 8, 8)
    assert model.prior.log_prob(torch.zeros(2, TINY.latent_dim)).shape == (2,)
    with pytest.raises(ValueError, match="N x 1 x 8 x 8"):
        model.encode(torch.rand(2, 3, 8, 8))


def test_encoder_normalises_each_image_and_channel_over_its_pixels():
    config = dataclasses.replace(TINY, in_channels=2)
    model, x = HowToTrainYourVAE(config), images(4, config)
    mean = x.mean(dim=(2, 3), keepdim=True)
    variance = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    by_hand = (x - mean) / torch.sqrt(variance + 1e-3)  # Keras LayerNormalization(axis=(1, 2)), epsilon 1e-3
    assert torch.allclose(model.encoder.normalise(x), by_hand, atol=1e-6)
    assert model.encoder.normalise.weight.shape == (8, 8)  # one gain per pixel, as Keras' (H, W) gamma


def test_presets_have_the_original_shapes():
    quick, celeba, paper = PRESETS["quick"], PRESETS["celeba64"], PRESETS["celebahq256"]
    assert (quick.image_size, quick.code_size, quick.stages) == (32, 4, 3)
    assert (celeba.image_size, celeba.code_size, celeba.stages) == (64, 4, 4)
    assert (paper.image_size, paper.latent_dim, paper.filters, paper.stages, paper.encoder_blocks,
            paper.decoder_blocks, paper.code_channels) == (256, 512, 128, 6, 2, 1, 64)
    with pytest.raises(ValueError, match="halved"):
        HowToTrainYourVAEConfig(image_size=48, stages=5)


# ---------------------------------------------------------------- training through fit


def train(tmp_path, epochs: int, name: str = "run.pt") -> tuple[HowToTrainYourVAE, HowToTrainLoss, dict]:
    vaelab.seed_everything(0)
    model = HowToTrainYourVAE(TINY)
    objective = HowToTrainLoss(patchgan(TINY), adversary_lr=1e-3)
    history = vaelab.fit(model, objective, images(40), vaelab.TrainConfig(
        epochs=epochs, batch_size=10, lr=1e-3, betas=(0.5, 0.999), progress=False,
        checkpoint=str(tmp_path / name), device="cpu"))
    return model, objective, history


def test_resumed_adversarial_run_equals_an_uninterrupted_one(tmp_path):
    model, objective, history = train(tmp_path, 3, "straight.pt")
    train(tmp_path, 1, "resumed.pt")
    resumed, resumed_objective, resumed_history = train(tmp_path, 3, "resumed.pt")
    assert resumed_history == history and resumed_history.epochs == history.epochs
    for a, b in [(model, resumed), (objective.adversary, resumed_objective.adversary)]:
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), name
    assert {"loss", "adversary_loss", "global_kl", "variance_reg", "sigma2", "adversarial"} <= set(history)


def test_adversary_learns_only_from_its_own_loss(tmp_path):
    """fit's first step must move D exactly as Adam on L_D alone would (the generator's step comes from the same
    forward pass, so it cannot change D's)."""
    vaelab.seed_everything(0)
    model, x = HowToTrainYourVAE(TINY), images(10)
    objective = HowToTrainLoss(patchgan(TINY), adversary_lr=1e-2)
    reference = patchgan(TINY)  # the same initial weights (same seed)
    vaelab.fit(model, objective, x, vaelab.TrainConfig(epochs=1, batch_size=10, progress=False,
                                                       device="cpu", seed=5))
    # replay the step by hand: same data order (one batch of all 10), same noise
    vaelab.seed_everything(0)
    replay_model = HowToTrainYourVAE(TINY)
    replay = HowToTrainLoss(reference)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(5 * 100_003))
    vaelab.seed_everything(5)
    replay_model.train(), reference.train()
    d_loss = replay(replay_model, x[order])["adversary_loss"]
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2, betas=(0.5, 0.999))
    optimizer.zero_grad()
    d_loss.backward()
    optimizer.step()
    for p, q in zip(objective.adversary.parameters(), reference.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_non_finite_adversary_loss_stops_training():
    class Broken(HowToTrainLoss):
        def __call__(self, model, x):
            terms = super().__call__(model, x)
            return {**terms, "adversary_loss": terms["adversary_loss"] * float("nan")}

    with pytest.raises(NonFiniteLossError, match="adversary_loss=nan"):
        vaelab.fit(HowToTrainYourVAE(TINY), Broken(patchgan(TINY)), images(20),
                   vaelab.TrainConfig(epochs=1, batch_size=10, progress=False, device="cpu"))


def test_metrics_and_explorer_work_unchanged(tmp_path):
    model, _, _ = train(tmp_path, 1)
    x = images(30, seed=1)
    stats = metrics.latent_statistics(model, x)
    assert stats.mean_variance.shape == (TINY.latent_dim,)
    gmm = metrics.fit_latent_gmm(model, x, n_components=2)
    decoded = metrics.decode(model, gmm.sample(7))
    assert decoded.shape == (7, 1, 8, 8) and 0 <= decoded.min() and decoded.max() <= 1
    assert viz.latent_explorer(model, x[:6], n_latents=2, steps=3, pairs=2) is not None


# ---------------------------------------------------------------- the original's grid and batch norm as it ran


@pytest.mark.parametrize("size", [8, 32])
def test_patchgan_strided_layers_sample_on_tensorflows_grid(size):
    d = PatchGAN(1, (3, 2), (2, 1)).double().eval()
    conv = d.layers[0]
    x = torch.randn(2, 1, size, size, dtype=torch.float64)
    expected = tensorflow_same_conv(x, conv.weight) + conv.bias[None, :, None, None]
    torch.testing.assert_close(conv(x), expected)
    stride_one = d.layers[4]  # Conv -> BN -> LeakyReLU -> Dropout, then the second conv
    y = torch.randn(2, 3, size // 2, size // 2, dtype=torch.float64)
    torch.testing.assert_close(stride_one(y), tensorflow_same_conv(y, stride_one.weight, stride=1)
                               + stride_one.bias[None, :, None, None])


def test_decoder_upsampling_is_the_adjoint_of_tensorflows_same_conv():
    # Keras' Conv2DTranspose('same') is the adjoint of Conv2D('same') on twice the size: <conv(x), y> = <x, up(y)>
    up = upsample_conv(3, 2).double()
    with torch.no_grad():
        up.bias.zero_()
    x, y = torch.randn(2, 2, 8, 8, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    down = tensorflow_same_conv(x, up.weight)  # ConvTranspose2d(3 -> 2) holds the weight of a Conv2d(2 -> 3)
    assert up(y).shape == (2, 2, 8, 8)
    torch.testing.assert_close((down * y).sum(), (x * up(y)).sum())


def test_batch_norm_and_dropout_run_in_inference_mode_as_the_original_ran(tmp_path):
    model, objective, _ = train(tmp_path, 1)
    for network in (model, objective.adversary):
        network.train()
        layers = [m for m in network.modules() if isinstance(m, (nn.BatchNorm2d, nn.Dropout))]
        assert layers and not any(m.training for m in layers)
        for m in network.modules():
            if isinstance(m, nn.BatchNorm2d):  # a learned affine map: the moving statistics never moved
                assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
                assert torch.equal(m.running_var, torch.ones_like(m.running_var))
    assert any(not torch.equal(m.weight, torch.ones_like(m.weight)) for m in model.modules()
               if isinstance(m, nn.BatchNorm2d))  # while their scales did learn
    batch = HowToTrainYourVAE(dataclasses.replace(TINY, normalisation="batch")).train()
    assert all(m.training for m in batch.modules() if isinstance(m, nn.BatchNorm2d))
    with pytest.raises(ValueError, match="normalisation"):
        HowToTrainYourVAEConfig(normalisation="group")


def _real_or_blurred(normalisation: str) -> float:
    """The quick preset's PatchGAN trained 150 steps to tell Fashion-MNIST images (padded to 32x32, on the
    original's [-1, 1] scale) from the same images blurred by a 3x3 box filter, each batch in its own call as in
    training; its patch accuracy on 500 held-out images."""
    from vaelab.data import load
    x = torch.nn.functional.pad(load("fashion-mnist", "train", limit=3000).images, (2, 2, 2, 2)) * 2 - 1
    blurred = lambda im: torch.nn.functional.avg_pool2d(torch.nn.functional.pad(im, (1, 1, 1, 1), mode="replicate"),
                                                        3, stride=1)
    train_images, held_out = x[:2500], x[2500:]
    d = patchgan(dataclasses.replace(PRESETS["quick"], normalisation=normalisation), seed=0)
    optimizer = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(0)
    d.train()
    for _ in range(150):
        batch = train_images[torch.randint(0, len(train_images), (25,), generator=g)]
        loss = discriminator_loss(d(batch), d(blurred(batch)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return patch_accuracy(d.eval()(held_out), d(blurred(held_out)))


def test_patchgan_learns_to_tell_real_from_blurred_images():
    assert _real_or_blurred("inference") > 0.7  # measured 0.80; chance is 0.5


def test_patchgan_ending_in_training_mode_batch_norm_cannot_learn():
    # The pitfall the original avoided without saying so: separate calls, each batch's logits normalised alike.
    assert _real_or_blurred("batch") < 0.6  # measured 0.52


def test_patch_accuracy_weights_real_and_generated_halves_equally(tmp_path):
    real, fake = torch.tensor([2.0, -1.0, 3.0, 4.0]), torch.tensor([-1.0, -2.0])
    assert patch_accuracy(real, fake) == pytest.approx(0.5 * (3 / 4 + 1))
    model, objective, _ = train(tmp_path, 1)
    x = images(30, seed=5)
    d = objective.adversary
    with torch.no_grad():
        torch.manual_seed(0)
        by_hand = patch_accuracy(d(2 * x - 1), d(model(x).x_hat_signed))
    assert adversary_accuracy(d, model, x, batch_size=30) == pytest.approx(by_hand)
