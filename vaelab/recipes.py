"""Recipes: the data, network, loss weight and training budget of one experiment, for each compute mode.

Several chapters look at the same trained model; they share it by running the same recipe. `train_recipe` trains
once and writes the checkpoint under the runs folder; a later call with the same recipe finds the finished
checkpoint, loads it and returns at once (that is `fit`'s resumption, with nothing left to do).

`RECIPES` names every experiment the command line can run (`python -m vaelab train <name>`): the papers'
configurations and the book's quick runs.
"""
import hashlib
import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from torch import nn

from . import data
from . import how_to_train_your_vae as how_to_train
from .losses import BalancedGaussianELBO, GammaBalance, HowNotToTrainLoss, HowToTrainLoss
from .self_supervised_vae import PRESETS as SELF_SUPERVISED_PRESETS
from .self_supervised_vae import SelfSupervisedELBO, SelfSupervisedVAE, SelfSupervisedVAEConfig
from .split_vae import SplitVAE
from .train import EXECUTION_ONLY, History, TrainConfig, compute_mode, fit, seed_everything
from .vae import PAPER_BETA, PRESETS, VAE


@dataclass(frozen=True)
class Recipe:
    name: str
    dataset: str
    model: object  # the model's config dataclass (VAEConfig for the VAE and the Split-VAE)
    beta: float
    train: TrainConfig
    train_limit: int | None = None  # None: the whole training split
    pad_to_32: bool = False
    gamma_decay: float = 0.99  # the running-MSE decay of GammaBalance (the paper's 0.99)

    def load_data(self, split: str = "train", limit: int | None = None):
        """The recipe's images and labels; `limit` defaults to the recipe's own for the training split."""
        limit = self.train_limit if limit is None and split == "train" else limit
        return data.load(self.dataset, split, pad_to_32=self.pad_to_32, limit=limit)


def fashion_vae(mode: str | None = None, **train_overrides) -> Recipe:
    """The book's running example: the Split-VAE paper's network and loss on Fashion-MNIST.

    full: the paper's MNIST configuration (32x32, L=32, beta=8, base 64, 4 scales, 512-d embedding), all 60,000
    training images; the paper trains 250 epochs, we train 100. quick: 10,000 images at 28x28 with the small preset
    for 300 steps; there gamma's running mean decays with 0.95 instead of 0.99, because with a time constant of 100
    steps gamma would still lag the MSE by a factor of 2 at the end of training (measured), keeping the effective KL
    weight beta*gamma, and so the collapse of latent variables, far higher than the paper's long runs see.
    """
    mode = mode or compute_mode()
    if mode == "full":
        recipe = Recipe("fashion_vae_full", "fashion-mnist", PRESETS["mnist"], PAPER_BETA["mnist"],
                        TrainConfig(epochs=100, batch_size=100, lr=1e-3), pad_to_32=True)
    else:
        recipe = Recipe("fashion_vae_quick", "fashion-mnist", PRESETS["quick"], PAPER_BETA["mnist"],
                        TrainConfig(epochs=3, batch_size=100, lr=1e-3), train_limit=10_000, gamma_decay=0.95)
    return replace(recipe, train=replace(recipe.train, **train_overrides))


def runs_dir() -> Path:
    """Where recipes keep their checkpoints: $VAELAB_RUNS, else <data root>/runs."""
    return Path(os.environ.get("VAELAB_RUNS") or data.data_root() / "runs")


def default_objective(recipe: Recipe):
    """The Split-VAE loss with the recipe's beta and gamma decay."""
    return BalancedGaussianELBO(beta=recipe.beta, gamma=GammaBalance(decay=recipe.gamma_decay))


def run_fields(recipe: Recipe, model_class: type[nn.Module], tag: str, objective) -> dict[str, str]:
    """What defines a recipe's run, field by field: everything but the epoch count and how the steps run (so that
    asking for more epochs continues the same run)."""
    fields = {"model_class": model_class.__name__, "tag": tag, "objective": type(objective).__name__,
              **{f"objective.{k}": v for k, v in sorted(objective.settings().items())}}
    for name, value in asdict(recipe).items():
        fields |= {f"{name}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {name: value}
    return {name: repr(value) for name, value in fields.items()
            if not (name.startswith("train.") and name.removeprefix("train.") in EXECUTION_ONLY)}


def run_digest(fields: dict[str, str]) -> str:
    return hashlib.sha1(repr(sorted(fields.items())).encode()).hexdigest()[:8]


def checkpoint_path(recipe: Recipe, model_class: type[nn.Module], tag: str, objective, runs: Path | None = None) -> Path:
    """Where train_recipe keeps this run (in `runs`, default runs_dir()). The file name carries a digest of the run's
    fields (run_fields), so a changed recipe never loads a stale run, while asking for more epochs continues it."""
    digest = run_digest(run_fields(recipe, model_class, tag, objective))
    return Path(runs or runs_dir()) / f"{recipe.name}_{model_class.__name__}{tag}_{digest}.pt"


def train_recipe(recipe: Recipe, model_class: type[nn.Module] = VAE, tag: str = "",
                 objective=None, runs: Path | None = None) -> tuple[nn.Module, History]:
    """Train `model_class(recipe.model)` as the recipe says, or load it if that run already finished.

    objective: what to minimise; by default the Split-VAE loss with the recipe's beta and gamma decay.
    runs: the folder of the run's checkpoint (default runs_dir()).
    """
    objective = objective if objective is not None else default_objective(recipe)
    checkpoint = checkpoint_path(recipe, model_class, tag, objective, runs)
    seed_everything(recipe.train.seed)  # the initial weights too depend on the seed alone
    model = model_class(recipe.model)
    images = recipe.load_data("train").images
    metadata = {"recipe": recipe.name, "dataset": recipe.dataset, "pad_to_32": recipe.pad_to_32,
                "model_class": model_class.__name__, "vaelab_version": importlib.metadata.version("vaelab")}
    history = fit(model, objective, images, replace(recipe.train, checkpoint=str(checkpoint)), metadata)
    return model, history


@dataclass(frozen=True)
class Experiment:
    """A recipe with the model class and the objective it trains: what `python -m vaelab train NAME` runs."""

    recipe: Recipe
    model_class: type[nn.Module] = VAE
    objective: Callable[[Recipe], object] | None = None  # None: the Split-VAE loss with the recipe's beta
    tag: str = ""  # told apart in the run's file name: runs of one recipe with different objectives

    def make_objective(self, recipe: Recipe | None = None):
        """A fresh objective for the recipe (default: the experiment's own): what its run minimises."""
        recipe = recipe or self.recipe
        return self.objective(recipe) if self.objective is not None else default_objective(recipe)

    def train(self, runs: Path | None = None, **train_overrides) -> tuple[nn.Module, History]:
        recipe = replace(self.recipe, train=replace(self.recipe.train, **train_overrides))
        return train_recipe(recipe, self.model_class, self.tag, self.make_objective(recipe), runs)

    def seeded(self, seed: int) -> "Experiment":
        """The same experiment trained from another seed (initial weights, data order, noise, a PatchGAN's weights)."""
        return replace(self, recipe=replace(self.recipe, train=replace(self.recipe.train, seed=seed)))

    def checkpoint(self, runs: Path | None = None) -> Path:
        """The run's checkpoint file (it exists once the run has trained at least one epoch)."""
        return checkpoint_path(self.recipe, self.model_class, self.tag, self.make_objective(self.recipe), runs)


def split_vae_paper(dataset: str, model_class: type[nn.Module] = SplitVAE) -> Experiment:
    """The Split-VAE paper's run on MNIST, CIFAR-10 or CelebA (its Sec. 4): its network, beta and epochs,
    Adam 1e-3, batches of 100, the whole training split."""
    preset = {"mnist": "mnist", "cifar10": "cifar10", "celeba": "celeba"}[dataset]
    prefix = "splitvae" if model_class is SplitVAE else "vae"
    recipe = Recipe(f"{prefix}_{dataset}", dataset, PRESETS[preset], PAPER_BETA[preset],
                    TrainConfig(epochs=PAPER_EPOCHS[dataset], batch_size=100, lr=1e-3), pad_to_32=dataset == "mnist")
    return Experiment(recipe, model_class)


PAPER_EPOCHS = {"mnist": 250, "cifar10": 110, "celeba": 160}  # the Split-VAE paper's epochs


# The self-supervised VAE's optimiser (srVAE's code): AdaMax, lr 2e-3, eps 1e-7, the rate multiplied by 0.999999 after
# every step down to 1e-4, batches of 32.
SELF_SUPERVISED_TRAIN = dict(batch_size=32, lr=2e-3, optimizer="adamax", betas=(0.9, 0.999), eps=1e-7,
                             lr_decay=0.999999, min_lr=1e-4)
SELF_SUPERVISED_VARIANTS = ("vae", "2level", "3level", "sketch")


def self_supervised(variant: str, mode: str | None = None, **train_overrides) -> Recipe:
    """Chapter 5's runs: "vae" (no transform), "2level" (one downscale), "3level" (two), "sketch".

    quick: Fashion-MNIST 28 -> 14 -> 7 with the small networks of the quick presets, 4,800 training images seen
    once (150 steps), the same for every variant, so that their bounds compare at equal budget; the learning rate
    starts at 5e-3, not 2e-3, which gave every variant a better bound in runs this short (measured: at 200 steps,
    -0.10 bpd for the VAE and -0.19 for the 2-level model). full: CIFAR-10 32 -> 16 (-> 8), srVAE's topology at half
    its growth rates with the RealNVP prior, 30 epochs of the whole training split, the paper's
    optimiser.
    """
    if variant not in SELF_SUPERVISED_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; the variants are {SELF_SUPERVISED_VARIANTS}")
    mode = mode or compute_mode()
    if mode == "full":
        recipe = Recipe(f"selfvae_{variant}_full", "cifar10", SELF_SUPERVISED_PRESETS[f"cifar10_{variant}"], 1.0,
                        TrainConfig(epochs=30, **SELF_SUPERVISED_TRAIN))
    else:
        recipe = Recipe(f"selfvae_{variant}_quick", "fashion-mnist", SELF_SUPERVISED_PRESETS[f"quick_{variant}"], 1.0,
                        TrainConfig(epochs=1, **{**SELF_SUPERVISED_TRAIN, "lr": 5e-3}), train_limit=4_800)
    return replace(recipe, train=replace(recipe.train, **train_overrides))


def self_supervised_paper(variant: str) -> Experiment:
    """The self-supervised VAE paper's CIFAR-10 runs at srVAE's full size (Sec. 4 and srVAE's code): the two-level model
    ("2level") or the VAE with the RealNVP prior ("vae"), 2,000 epochs (srVAE's default; the paper gives none)."""
    config = SelfSupervisedVAEConfig(transforms=("downscale",))  # the defaults are srVAE's CIFAR-10 networks
    if variant == "vae":
        config = replace(config, transforms=(), top_encoder=(16, 8), top_decoder=(128, 6))  # srVAE's densenet32
    recipe = Recipe(f"selfvae_{variant}_cifar10", "cifar10", config, 1.0,
                    TrainConfig(epochs=2000, **SELF_SUPERVISED_TRAIN))
    return Experiment(recipe, SelfSupervisedVAE, lambda _: SelfSupervisedELBO())

def how_to_train_your_vae(mode: str | None = None, **train_overrides) -> Recipe:
    """Rivera's residual VAE (chapter 6), trained as the original: Adam with beta_1 = 0.5 and Keras' epsilon 1e-7.

    full: CelebA 64x64 with the Split-VAE crop, the `celeba64` preset, batches of 64 at the original's
    learning rate 1e-4, 10 epochs (the original: CelebA-HQ 256x256, 300-400 epochs). quick: Fashion-MNIST padded to
    32x32, the `quick` preset, 5,000 images seen once in batches of 25 (200 steps) at 1e-3, so that the chapter's
    four runs train in 70 to 90 s on two CPU cores (measured). `beta` is the KL weight, 1 in both of the original's
    losses.
    """
    mode = mode or compute_mode()
    if mode == "full":
        recipe = Recipe("how_to_train_full", "celeba", how_to_train.PRESETS["celeba64"], 1.0,
                        TrainConfig(epochs=10, batch_size=64, lr=1e-4, betas=(0.5, 0.999), eps=1e-7))
    else:
        recipe = Recipe("how_to_train_quick", "fashion-mnist", how_to_train.PRESETS["quick"], 1.0,
                        TrainConfig(epochs=1, batch_size=25, lr=1e-3, betas=(0.5, 0.999), eps=1e-7),
                        train_limit=5_000, pad_to_32=True)
    return replace(recipe, train=replace(recipe.train, **train_overrides))


# Chapter 6's ablation, each an objective for a recipe: the original's baseline, then its loss built up term by term.
HOW_TO_TRAIN_VARIANTS: dict[str, Callable[[Recipe], object]] = {
    "standard-kl": lambda recipe: HowNotToTrainLoss(kl_weight=recipe.beta),
    "global-kl": lambda recipe: HowToTrainLoss(global_weight=recipe.beta, variance_weight=0.0),
    "regularised": lambda recipe: HowToTrainLoss(global_weight=recipe.beta),
    "patchgan": lambda recipe: HowToTrainLoss(how_to_train.patchgan(recipe.model, seed=recipe.train.seed),
                                              global_weight=recipe.beta, adversary_lr=recipe.train.lr,
                                              adversary_betas=recipe.train.betas),
}

RECIPES: dict[str, Callable[[], Experiment]] = {
    "book-vae-quick": lambda: Experiment(fashion_vae("quick")),
    "book-vae-full": lambda: Experiment(fashion_vae("full")),
    "book-splitvae-quick": lambda: Experiment(fashion_vae("quick"), SplitVAE),
    "book-splitvae-full": lambda: Experiment(fashion_vae("full"), SplitVAE),
    **{f"splitvae-{d}": (lambda d=d: split_vae_paper(d)) for d in PAPER_EPOCHS},
    **{f"vae-{d}": (lambda d=d: split_vae_paper(d, VAE)) for d in PAPER_EPOCHS},
    **{f"book-selfvae-{v}-{m}": (lambda v=v, m=m: Experiment(self_supervised(v, m), SelfSupervisedVAE,
                                                             lambda _: SelfSupervisedELBO()))
       for v in SELF_SUPERVISED_VARIANTS for m in ("quick", "full")},
    **{f"selfvae-{v}-cifar10": (lambda v=v: self_supervised_paper(v)) for v in ("2level", "vae")},
    **{f"book-howto-{v}-{m}": (lambda v=v, m=m: Experiment(how_to_train_your_vae(m), how_to_train.HowToTrainYourVAE,
                                                           HOW_TO_TRAIN_VARIANTS[v], tag=f"_{v}"))
       for v in HOW_TO_TRAIN_VARIANTS for m in ("quick", "full")},
}
