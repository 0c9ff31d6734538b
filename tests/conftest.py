import pytest
import torch

from vaelab import VAEConfig

# A VAE small enough to train in a second on 8x8 digits, with every kind of layer the paper's network has.
TINY = VAEConfig(image_size=8, in_channels=1, latent_dim=2, base_dim=4, num_scales=1, emb_dim=8, decoder_start=4)


@pytest.fixture
def tiny_config():
    return TINY


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
