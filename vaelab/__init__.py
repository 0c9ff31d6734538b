"""vaelab: the library under the book. Each paper's model lives in a file named after it; the losses in
`losses`, the metrics in `metrics`, data in `data`, the training loop in `train`,
the compute switch, device and seed in `runtime`."""
import importlib.metadata

from .losses import BalancedGaussianELBO, BernoulliELBO, GammaBalance
from .checkpoint import restore
from .runtime import compute_mode, pick_device, seed_everything
from .train import TrainConfig, fit
from .recipes import Recipe, fashion_vae, train_recipe
from . import shipped  # the book's runs trained longer, installed with the package
from .vae import PAPER_BETA, PRESETS, VAE, VAEConfig

__version__ = importlib.metadata.version("vaelab")
