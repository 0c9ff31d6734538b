"""vaelab: the library under the book. Each paper's model lives in a file named after it; the densities in
`distributions`, the losses in `losses`, the metrics in `metrics`, data in `data`, the training loop in `train`,
one run (a recipe, a model class, an objective) in `experiment` and the named runs in `recipes`, the compute
switch, device and seed in `runtime`."""
import importlib.metadata

from .losses import BalancedGaussianELBO, BernoulliELBO, GammaBalance
from .checkpoint import restore
from .runtime import compute_mode, pick_device, seed_everything
from .train import TrainConfig, fit
from .experiment import Experiment, Recipe, Trained
from .recipes import RECIPES, fashion_vae
from . import shipped  # the book's runs trained longer, installed with the package
from .vae import PAPER_BETA, PRESETS, VAE, VAEConfig

__version__ = importlib.metadata.version("vaelab")
