"""One handle for a run: an `Experiment` is a `Recipe` (data, network config, training budget), the model class it
builds and the objective it minimises; `train()` trains it, or loads it when that run has finished, and returns a
`Trained`. Chapters share a trained model by running the same experiment (by its name in `vaelab.recipes.RECIPES`):
its checkpoint's name carries a digest of `Experiment.fields` (everything but the epoch count and how the steps
run), so asking for more epochs continues the run and a changed recipe never loads a stale one.
"""
import hashlib
import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from torch import nn

from . import data
from .losses import BalancedGaussianELBO, GammaBalance, Objective
from .runtime import seed_everything
from .train import DRY_RUN_LIMITS, EXECUTION_ONLY, History, TrainConfig, dry_run, fit
from .vae import VAE


@dataclass(frozen=True)
class Recipe:
    name: str
    dataset: str
    model: object  # the model's config dataclass (VAEConfig for the VAE and the Split-VAE)
    train: TrainConfig
    train_limit: int | None = None  # None: the whole training split
    pad_to_32: bool = False

    def load_data(self, split: str = "train", limit: int | None = None):
        """The recipe's images and labels; `limit` defaults to the recipe's own for the training split."""
        limit = self.train_limit if limit is None and split == "train" else limit
        if dry_run():  # a dry run trains and evaluates a few images only: no need to hold the whole split
            limit = min(limit if limit is not None else DRY_RUN_LIMITS["images"], DRY_RUN_LIMITS["images"])
        return data.load(self.dataset, split, pad_to_32=self.pad_to_32, limit=limit)

    def with_train(self, **overrides) -> "Recipe":
        """The same recipe with some of its training settings changed (TrainConfig's fields)."""
        return replace(self, train=replace(self.train, **overrides))


def runs_dir() -> Path:
    """Where experiments keep their checkpoints: $VAELAB_RUNS, else <data root>/runs; in a dry run its subfolder
    dry-run/, so that a dry run's few steps never stand in the place of a real run's checkpoint."""
    runs = Path(os.environ.get("VAELAB_RUNS") or data.data_root() / "runs")
    return runs / "dry-run" if dry_run() else runs


def split_vae_loss(beta: float = 1.0, gamma_decay: float = 0.99) -> Callable[[Recipe], BalancedGaussianELBO]:
    """The Split-VAE paper's loss, what its VAE and Split-VAE minimise, as an experiment's objective: KL weight
    `beta` (1: the negative ELBO), gamma the running MSE decaying with `gamma_decay` (the paper's 0.99)."""
    return lambda recipe: BalancedGaussianELBO(beta=beta, gamma=GammaBalance(decay=gamma_decay))


@dataclass
class Trained:
    """A run as a page holds it, trained here or loaded (from the runs folder, or vaelab's shipped checkpoints)."""

    experiment: "Experiment"
    model: nn.Module
    history: History
    objective: object  # in the state the run left it: the Split-VAE's gamma, a PatchGAN's weights
    trained_now: bool  # False: loaded, with nothing left to train
    payload: dict | None = None  # loaded from a shipped checkpoint: its payload (provenance, held-out accuracies)

    @property
    def steps(self) -> int:
        return len(self.history["loss"])


@dataclass(frozen=True)
class Experiment:
    """A recipe with the model class and the objective it trains: what `python -m vaelab train NAME` runs."""

    recipe: Recipe
    model_class: type[nn.Module] = VAE
    # A fresh objective for the recipe, with its own settings (the Split-VAE loss's beta, Rivera's kl_weight...)
    objective: Callable[[Recipe], object] = split_vae_loss()
    tag: str = ""  # told apart in the run's file name: runs of one recipe with different objectives

    def __post_init__(self):
        if isinstance(self.objective, Objective) or not callable(self.objective):
            raise ValueError(f"objective is a function of the recipe that makes a fresh objective for each run, "
                             f"e.g. lambda recipe: HowToTrainLoss(...); got {self.objective!r}")

    def make_objective(self):
        """A fresh objective: what this run minimises."""
        return self.objective(self.recipe)

    def with_train(self, **overrides) -> "Experiment":
        """The same experiment with some of its training settings changed (TrainConfig's fields)."""
        return replace(self, recipe=self.recipe.with_train(**overrides))

    def seeded(self, seed: int) -> "Experiment":
        """The same experiment trained from another seed (initial weights, data order, noise, a PatchGAN's weights)."""
        return self.with_train(seed=seed)

    def fields(self, objective=None) -> dict[str, str]:
        """What defines the run, field by field: everything but the epoch count and how the steps run (so that
        asking for more epochs continues the same run). `objective`: the run's own, where one is already made."""
        objective = self.make_objective() if objective is None else objective
        fields = {"model_class": self.model_class.__name__, "tag": self.tag, "objective": type(objective).__name__,
                  **{f"objective.{k}": v for k, v in sorted(objective.settings().items())}}
        for name, value in asdict(self.recipe).items():
            fields |= {f"{name}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {name: value}
        return {name: repr(value) for name, value in fields.items()
                if not (name.startswith("train.") and name.removeprefix("train.") in EXECUTION_ONLY)}

    def digest(self, objective=None) -> str:
        """Eight hex digits of the run's fields: its checkpoint's name in the runs folder."""
        return hashlib.sha1(repr(sorted(self.fields(objective).items())).encode()).hexdigest()[:8]

    def checkpoint(self, runs: Path | None = None, objective=None) -> Path:
        """The run's checkpoint in `runs` (default runs_dir()); it exists once the run has trained an epoch."""
        name = f"{self.recipe.name}_{self.model_class.__name__}{self.tag}_{self.digest(objective)}.pt"
        return Path(runs or runs_dir()) / name

    def train(self, runs: Path | None = None, **train_overrides) -> Trained:
        """Train `model_class(recipe.model)` as the recipe says, or load the run if it already finished (that is
        `fit`'s resumption with nothing left to do); `train_overrides` change TrainConfig's fields."""
        if train_overrides:
            return self.with_train(**train_overrides).train(runs)
        recipe, objective = self.recipe, self.make_objective()
        seed_everything(recipe.train.seed)  # the initial weights too depend on the seed alone
        model = self.model_class(recipe.model)
        metadata = {"recipe": recipe.name, "dataset": recipe.dataset, "pad_to_32": recipe.pad_to_32,
                    "model_class": self.model_class.__name__, "vaelab_version": importlib.metadata.version("vaelab")}
        history = fit(model, objective, recipe.load_data("train").images,
                      replace(recipe.train, checkpoint=str(self.checkpoint(runs, objective))), metadata)
        return Trained(self, model, history, objective, trained_now=len(history.epochs["loss"]) > history.resumed)

