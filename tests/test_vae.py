import pytest
import torch
from torch.distributions import Normal

from vaelab import PRESETS, VAE, VAEConfig
from vaelab import nn as blocks
from vaelab.vae import Encoder
from tensorflow_reference import tensorflow_same_conv


def test_decoder_widths_follow_the_paper():
    assert PRESETS["mnist"].decoder_dims == [512, 256, 128, 64]
    assert PRESETS["celeba"].decoder_dims == [1024, 512, 256, 128, 64]


@pytest.mark.parametrize("name", ["quick", "mnist", "cifar10"])
def test_shapes_of_every_output(name):
    config = PRESETS[name]
    model = VAE(config).eval()
    x = torch.rand(2, config.in_channels, config.image_size, config.image_size)
    out = model(x)
    assert out.x_hat.shape == x.shape
    assert out.mu.shape == out.logvar.shape == out.z.shape == (2, config.latent_dim)
    assert 0 <= out.x_hat.min() and out.x_hat.max() <= 1
    assert model.sample(3).shape == (3, *x.shape[1:])


def test_encoder_halves_the_resolution_num_scales_times():
    model = VAE(PRESETS["mnist"])
    features = model.encoder.features[:-3](torch.rand(2, 1, 32, 32))  # before pooling and the dense block
    assert features.shape == (2, 512, 2, 2)


def test_wrong_input_shape_is_a_clear_error():
    model = VAE(PRESETS["quick"])
    with pytest.raises(ValueError, match="N x 1 x 28 x 28"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="torch.from_numpy"):
        model(torch.rand(2, 1, 28, 28).numpy())
    with pytest.raises(ValueError, match="float64 but torch.float32 is needed"):
        model(torch.rand(2, 1, 28, 28, dtype=torch.float64))
    with pytest.raises(ValueError, match="latent codes of shape N x 16"):
        model.decode(torch.randn(2, 8))


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError, match="power of 2"):
        VAEConfig(image_size=30)


def test_reparameterisation_has_the_right_moments_and_density():
    mu, logvar = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, -1.0]])
    z = Encoder.sample(mu.expand(200_000, 2), logvar.expand(200_000, 2))
    torch.testing.assert_close(z.mean(0), mu[0], atol=0.01, rtol=0)
    torch.testing.assert_close(z.std(0), (0.5 * logvar[0]).exp(), atol=0.01, rtol=0)
    expected = Normal(mu, (0.5 * logvar).exp()).log_prob(z[:5]).sum(-1)
    torch.testing.assert_close(Encoder.log_prob(z[:5], mu, logvar), expected)


@pytest.mark.parametrize("size", [8, 7, 28])
def test_downsample_samples_on_tensorflows_grid(size):
    conv = blocks.downsample(2, 3)
    torch.nn.init.zeros_(conv.bias)
    x = torch.randn(2, 2, size, size, dtype=torch.float64)
    torch.testing.assert_close(conv.double()(x), tensorflow_same_conv(x, conv.weight.double()))
    # a delta image: with a kernel that keeps only its centre, output (1, 1) sees input (3, 3) on an even size
    centre = blocks.downsample(1, 1)
    with torch.no_grad():
        centre.weight.zero_()
        centre.weight[0, 0, 1, 1] = 1
        centre.bias.zero_()
    delta = torch.zeros(1, 1, 8, 8)
    delta[0, 0, 3, 3] = 1
    assert centre(delta)[0, 0].nonzero().tolist() == [[1, 1]]


def test_upsample_is_the_adjoint_of_downsample_and_doubles_the_size():
    # Keras' Conv2DTranspose('same') is the gradient (adjoint) of Conv2D('same') for an input of twice the size:
    # <down(x), y> = <x, up(y)> with the same weights and no bias.
    down, up = blocks.downsample(2, 3).double(), blocks.upsample(3, 2).double()
    with torch.no_grad():
        up.weight.copy_(down.weight)
        down.bias.zero_()
        up.bias.zero_()
    x, y = torch.randn(2, 2, 8, 8, dtype=torch.float64), torch.randn(2, 3, 4, 4, dtype=torch.float64)
    assert up(y).shape == (2, 2, 8, 8)
    torch.testing.assert_close((down(x) * y).sum(), (x * up(y)).sum())
