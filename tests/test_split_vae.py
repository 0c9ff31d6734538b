"""vaelab.split_vae: the split head, the paper's parameter counts and the mix; and vaelab.metrics' Keras parameter
count and high-frequency share (the split criterion), which the paper's numbers are compared with."""
import math

import pytest
import torch

from vaelab import PRESETS, VAE, VAEConfig, fit
from vaelab.losses import BalancedGaussianELBO
from vaelab.metrics import high_frequency_share, keras_parameter_count
from vaelab.split_vae import PAPER_PARAMETERS, SplitImages, SplitVAE, blend, random_mix
from vaelab.train import TrainConfig

TINY = VAEConfig(image_size=8, in_channels=3, latent_dim=4, base_dim=8, num_scales=1, emb_dim=16)


def tiny_model(seed: int = 0) -> SplitVAE:
    torch.manual_seed(seed)
    return SplitVAE(TINY).eval()


def test_output_has_a_one_channel_mask_two_images_and_their_blend():
    model = tiny_model()
    x = torch.rand(5, 3, 8, 8)
    out = model(x)
    assert model.decoder_channels == 7  # 2C + 1
    assert out.sigma.shape == (5, 1, 8, 8)
    assert out.x1.shape == out.x2.shape == out.x_hat.shape == (5, 3, 8, 8)
    for part in (out.sigma, out.x1, out.x2, out.x_hat):
        assert 0 <= part.min() and part.max() <= 1
    torch.testing.assert_close(out.x_hat, out.sigma * out.x1 + (1 - out.sigma) * out.x2)


def test_parts_are_the_last_conv_channels_in_the_original_order():
    model = tiny_model()
    z = torch.randn(4, TINY.latent_dim)
    last = torch.sigmoid(model.decoder(z))
    sigma, x1, x2 = model.decode_parts(z)
    torch.testing.assert_close(sigma, last[:, :1])
    torch.testing.assert_close(x1, last[:, 1:4])
    torch.testing.assert_close(x2, last[:, 4:7])
    torch.testing.assert_close(model.decode(z), blend(sigma, x1, x2))


def test_decode_split_returns_all_four_and_sample_keeps_the_vae_contract():
    model = tiny_model()
    z = torch.randn(6, TINY.latent_dim, dtype=torch.float64)  # e.g. from a scikit-learn GMM
    parts = model.decode_split(z)
    assert isinstance(parts, SplitImages)
    torch.testing.assert_close(parts.x, blend(parts.sigma, parts.x1, parts.x2))
    torch.testing.assert_close(parts.x, model.decode(z.float()))
    assert model.sample(3).shape == (3, 3, 8, 8)


@pytest.mark.parametrize("preset", ["mnist", "cifar10", "celeba"])
def test_keras_parameter_count_matches_the_paper_under_its_own_convention(preset):
    with torch.device("meta"):  # shapes only: no memory for 29M weights
        model = SplitVAE(PRESETS[preset])
    paper = PAPER_PARAMETERS[preset]
    assert keras_parameter_count(model, paper.convention) == paper.count


def test_the_two_keras_counts_differ_by_the_batch_norm_moving_statistics():
    with torch.device("meta"):
        model = SplitVAE(PRESETS["mnist"])
    channels = sum(m.num_features for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    assert channels == 2_816  # so the MNIST figure is 2 x 2,816 = 5,632 below the total count
    assert keras_parameter_count(model, "total") - keras_parameter_count(model, "trainable") == 2 * channels
    with pytest.raises(ValueError, match="trainable"):
        keras_parameter_count(model, "all")


def test_split_head_costs_2C_more_output_channels_than_the_vae():
    with torch.device("meta"):
        split, plain = SplitVAE(PRESETS["cifar10"]), VAE(PRESETS["cifar10"])
    last_conv_in = PRESETS["cifar10"].base_dim
    extra_channels = 2 * 3 + 1 - 3
    assert keras_parameter_count(split) - keras_parameter_count(plain) == extra_channels * (9 * last_conv_in + 1)


def test_trains_with_the_plain_vae_loss():
    torch.manual_seed(0)
    # Coloured squares at random places: structure worth learning, in a second.
    images = torch.zeros(400, 3, 8, 8)
    for image in images:
        top, left = torch.randint(0, 5, (2,)).tolist()
        image[:, top:top + 4, left:left + 4] = torch.rand(3, 1, 1)
    model = SplitVAE(TINY)
    history = fit(model, BalancedGaussianELBO(beta=1.0), images,
                  TrainConfig(epochs=6, batch_size=50, lr=3e-3, progress=False, device="cpu"))
    mse = history.epochs["mse"]  # not "loss": its scale 1/gamma grows as gamma shrinks
    assert mse[-1] < 0.5 * mse[0], mse
    assert all(later <= earlier for earlier, later in zip(history["gamma"], history["gamma"][1:]))


def test_random_mix_takes_half_from_each_whole_image():
    x1, x2 = torch.rand(10, 1, 4, 4), torch.rand(10, 1, 4, 4)
    mix = random_mix(x1, x2, seed=3)
    from_x1 = [bool(torch.equal(m, a)) for m, a in zip(mix, x1)]
    from_x2 = [bool(torch.equal(m, b)) for m, b in zip(mix, x2)]
    assert sum(from_x1) == 5 and sum(from_x2) == 5
    assert all(a != b for a, b in zip(from_x1, from_x2))
    torch.testing.assert_close(random_mix(x1, x2, seed=3), mix)
    assert not torch.equal(random_mix(x1, x2, seed=4), mix)
    with pytest.raises(ValueError, match="same shape"):
        random_mix(x1, x2[:5])


def test_high_frequency_share_of_known_patterns():
    rows, cols = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    checkerboard = ((rows + cols) % 2)[None, None]
    stripes_period_2 = (cols % 2)[None, None]
    slow_wave = torch.cos(2 * math.pi * cols / 8)[None, None]  # 1/8 cycle per pixel
    constant = torch.full((1, 1, 16, 16), 0.3)
    maps = torch.cat([checkerboard, stripes_period_2, slow_wave, constant])
    # The Hann window smears each frequency over a few neighbouring bins, hence the tolerance.
    torch.testing.assert_close(high_frequency_share(maps), torch.tensor([1.0, 1.0, 0.0, 0.0]), atol=1e-3, rtol=0)
    # A cosine of amplitude a carries a^2/2 per pixel, a +-a checkerboard a^2: two thirds lie above the cutoff.
    mixed = 0.5 + 0.25 * slow_wave + 0.25 * (2 * checkerboard - 1)
    assert high_frequency_share(mixed).item() == pytest.approx(2 / 3, abs=0.01)


def test_a_bright_frame_is_not_a_high_frequency_pattern():
    rows, cols = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
    silhouette = (((rows - 14).abs() < 7) & ((cols - 14).abs() < 7)).float()
    framed = silhouette.clone()
    framed[[0, -1], :] = framed[:, [0, -1]] = 1.0  # as some learned masks have at the image border
    shares = high_frequency_share(torch.stack([silhouette, framed])[:, None])
    assert shares.max() < 0.05
