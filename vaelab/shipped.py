"""Shipped checkpoints: the book's quick-mode runs, trained far longer than a chapter can afford, installed with
vaelab so that the rendered book and a Colab student see well-trained models.

A chapter still trains its own quick run (that proves the code trains, and it is what CI checks), then shows the
same run trained on when vaelab ships it:

    model, history = train_recipe(recipe)                           # this page's run, 300 steps
    model, history, source = shipped.prefer(recipe, model, history)  # the same run at 20 epochs, if shipped

Runs a page compares go through `prefer_together`, which swaps them all or none, and only at one length.

A shipped checkpoint is the same run as the page's: the same recipe, network, objective and seed; only the number
of epochs differs. It records where it came from: the run's fields, vaelab's version and git commit, and a digest
of the code that computes the model (its module and the vaelab modules that module imports, comments and
docstrings left out). One whose run or model code differs from the installed vaelab's is stale: `load` refuses it
and names what changed; `prefer` then shows the page's own run and says why.

    python -m vaelab ship book-vae-quick --epochs 20    # trains on (resuming), writes vaelab/shipped/<run>.pt
    python -m vaelab shipped                             # what is installed, and whether each is current

Weights are stored in half precision (loaded back as float32) to keep the package small; `ship` refuses to write
a checkpoint whose loss on a fixed batch moves by more than 1e-3 (relative) through that rounding.
"""
import ast
import copy
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import metrics
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .recipes import Experiment, Recipe, default_objective, run_digest, run_fields, runs_dir
from .runtime import machine
from .train import History

SHIPPED = Path(__file__).parent / "shipped"
SHIPPED_FORMAT = "vaelab-shipped-1"
HALF_PRECISION_TOLERANCE = 1e-3
HELD_OUT_IMAGES = 500  # test images a shipped run's discriminator is checked on after every epoch


class StaleCheckpointError(CheckpointError):
    """A shipped checkpoint was trained by another run, or by model code that has changed since."""


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def _vaelab_imports(module_name: str, tree: ast.AST) -> set[str]:
    """The vaelab modules a module imports from: `from . import transforms` -> vaelab.transforms, `from .nn import
    ResFcBlock` -> vaelab.nn.resnet (where ResFcBlock is defined)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            package = importlib.util.resolve_name("." * node.level + (node.module or ""),
                                                  importlib.import_module(module_name).__package__)
            for alias in node.names:
                imported = getattr(importlib.import_module(package), alias.name, None)
                if isinstance(imported, types.ModuleType):
                    found.add(imported.__name__)
                else:  # the module that defines the name, not a package re-exporting it
                    found.add(_defining_module(package, alias.name))
    return found


def _defining_module(module_name: str, name: str) -> str:
    """Where `name`, imported from `module_name`, is defined: a class's or function's __module__; for a constant
    re-exported by a package (`from .resnet import PAPER_BN_MOMENTUM` in vaelab/nn/__init__.py), the submodule."""
    defined_in = getattr(getattr(importlib.import_module(module_name), name, None), "__module__", None)
    if isinstance(defined_in, str) and defined_in.startswith("vaelab"):
        return defined_in
    tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0 and any(a.name == name for a in node.names):
            package = importlib.import_module(module_name).__package__
            return _defining_module(importlib.util.resolve_name("." * node.level + (node.module or ""), package), name)
    return module_name


def source_digest(source: str) -> str:
    """A digest of Python source that comments, docstrings and formatting do not change: of its syntax tree."""
    return hashlib.sha256(ast.dump(_without_docstrings(ast.parse(source))).encode()).hexdigest()[:16]


def code_digests(model_class: type[nn.Module]) -> dict[str, str]:
    """A digest of each module that computes `model_class`: its own and, transitively, the vaelab modules it imports.
    Comments, docstrings and formatting do not count (the digest is of the syntax tree)."""
    digests, pending = {}, [model_class.__module__]
    while pending:
        name = pending.pop()
        if name in digests:
            continue
        source = inspect.getsource(importlib.import_module(name))
        digests[name] = source_digest(source)
        pending.extend(_vaelab_imports(name, ast.parse(source)) - digests.keys())
    return dict(sorted(digests.items()))


def _git_commit() -> str | None:
    """The commit of the checkout vaelab runs from (with "+changes" when files differ from it), None if not one."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "vaelab", ":!vaelab/shipped"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()  # not the shipped files
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+changes" if dirty else "")


def shipped_path(recipe: Recipe, model_class: type[nn.Module], tag: str = "", directory: Path = SHIPPED) -> Path:
    """The run's checkpoint file name without its digest: the digest is checked inside, so a changed recipe finds the
    old file and is told it is stale instead of finding nothing. Seeds other than 0 are named: `..._seed2.pt`."""
    seed = f"_seed{recipe.train.seed}" if recipe.train.seed else ""
    return Path(directory) / f"{recipe.name}_{model_class.__name__}{tag}{seed}.pt"


def loss_on_test_batch(model: nn.Module, objective, recipe: Recipe) -> float:
    """The objective on the recipe's first test batch, with fixed noise: how `ship` checks the half-precision
    weights, and how a test checks that a loaded checkpoint computes what the trained run computed."""
    images = recipe.load_data("test", limit=recipe.train.batch_size).images.to(next(model.parameters()).device)
    torch.manual_seed(0)
    with torch.no_grad():
        return objective(model.eval(), images)["loss"].item()


def ship(experiment: Experiment, epochs: int, directory: Path = SHIPPED, experiment_name: str | None = None) -> Path:
    """Train the experiment's run on to `epochs`, then write its weights, history and provenance to `directory`,
    atomically. The run trains in <runs folder>/shipping, apart from the book's own quick runs (which the same run
    trained longer would otherwise replace), and an interrupted `ship` resumes it there."""
    recipe = experiment.recipe
    if epochs <= recipe.train.epochs:
        raise ValueError(f"a shipped checkpoint must train longer than the recipe's {recipe.train.epochs} epochs; "
                         f"got --epochs {epochs}")
    objective = experiment.make_objective(recipe)
    fields = run_fields(recipe, experiment.model_class, experiment.tag, objective)
    provenance = {"code": code_digests(experiment.model_class), "git_commit": _git_commit(),  # before training:
                  "vaelab_version": importlib.metadata.version("vaelab")}  # the code that trains, not later edits
    runs = runs_dir() / "shipping"
    start = time.perf_counter()
    # A discriminator is checked after every epoch on test images it never trained on (an arm whose adversary sits
    # at chance adds nothing); the run is resumed epoch by epoch, which is the same run (vaelab.fit).
    with_adversary = getattr(objective, "adversary", None) is not None
    held_out = {"steps": [], "adversary_accuracy": []}
    test_images = recipe.load_data("test", limit=HELD_OUT_IMAGES).images if with_adversary else None
    for epoch in range(1, epochs + 1) if with_adversary else (epochs,):
        model, history = experiment.train(runs, epochs=epoch, progress=False)
        if with_adversary:
            probe = experiment.make_objective(recipe).adversary
            probe.load_state_dict(load_checkpoint(experiment.checkpoint(runs))["adversary"])
            probe.to(next(model.parameters()).device)
            held_out["steps"].append(len(history["loss"]))
            held_out["adversary_accuracy"].append(metrics.adversary_accuracy(probe, model, test_images))
    seconds = time.perf_counter() - start
    run = load_checkpoint(experiment.checkpoint(runs))
    objective.load_state_dict(run["objective"])  # e.g. the balance's gamma as training left it
    adversary = getattr(objective, "adversary", None)
    if adversary is not None:
        adversary.load_state_dict(run["adversary"])
        adversary.to(next(model.parameters()).device)
    parameters = dict(model.named_parameters())
    half = {k: v.cpu().half() if k in parameters else v.cpu() for k, v in model.state_dict().items()}
    rounded = copy.deepcopy(model)
    rounded.load_state_dict({k: v.float() if k in parameters else v for k, v in half.items()})
    loss_full, loss_half = loss_on_test_batch(model, objective, recipe), loss_on_test_batch(rounded, objective, recipe)
    if abs(loss_half - loss_full) > HALF_PRECISION_TOLERANCE * abs(loss_full):
        raise ValueError(f"half-precision weights move the loss on a test batch from {loss_full:.6g} to "
                         f"{loss_half:.6g}, more than {HALF_PRECISION_TOLERANCE:.0e} relative; not shipped")
    payload = {
        "format": SHIPPED_FORMAT, "experiment": experiment_name, "seed": recipe.train.seed, "run": fields, "run_digest": run_digest(fields),
        **provenance, "model_class": experiment.model_class.__name__, "model": half,
        "objective": run["objective"], "adversary": run.get("adversary"),
        "epochs": run["epoch"], "steps": len(history["loss"]),
        "recipe_steps": len(history["loss"]) // run["epoch"] * recipe.train.epochs,
        "history": {part: {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}
                    for part, values in history.state_dict().items()},
        "trained_on": machine(), "seconds_this_call": seconds,
        "test_batch_loss": {"float32": loss_full, "float16": loss_half},
        "held_out": held_out if with_adversary else None,
    }
    path = shipped_path(recipe, experiment.model_class, experiment.tag, directory)
    save_checkpoint(path, payload)
    path.chmod(0o644)  # installed with the package: readable by every user (the temporary file was private)
    return path


class Shipped:
    """A loaded shipped checkpoint: the model (float32, eval mode), its training history, and where it came from."""

    def __init__(self, model: nn.Module, payload: dict):
        self.model, self.payload = model, payload
        self.history = History(**{part: {k: v.tolist() for k, v in values.items()}
                                  for part, values in payload["history"].items()})

    def describe(self) -> str:
        p = self.payload
        commit = f" at commit {p['git_commit']}" if p["git_commit"] else ""
        return (f"{p['epochs']} epochs, {p['steps']:,} steps where the page's run takes {p['recipe_steps']:,}, on "
                f"{p['trained_on']}, by vaelab {p['vaelab_version']}{commit}")


def load(recipe: Recipe, model: nn.Module, tag: str = "", objective=None, directory: Path = SHIPPED) -> Shipped | None:
    """The shipped checkpoint of the run `train_recipe(recipe, type(model), tag, objective)` trains, loaded into a
    copy of `model`; None when vaelab ships none. Raises StaleCheckpointError when it is stale."""
    model_class = type(model)
    path = shipped_path(recipe, model_class, tag, directory)
    if not path.is_file():
        return None
    payload = load_checkpoint(path, SHIPPED_FORMAT)
    objective = objective if objective is not None else default_objective(recipe)
    fields = run_fields(recipe, model_class, tag, objective)
    changed = [f"{name}: {payload['run'].get(name, '(absent)')} then, {fields.get(name, '(absent)')} now"
               for name in sorted(set(fields) | set(payload["run"])) if fields.get(name) != payload["run"].get(name)]
    code = code_digests(model_class)
    changed += [f"the code of {module} has changed" for module in sorted(set(code) | set(payload["code"]))
                if code.get(module) != payload["code"].get(module)]
    if changed:
        name = (payload.get("experiment") or "<recipe>") + (f" --seed {payload['seed']}" if payload.get("seed") else "")
        raise StaleCheckpointError(
            f"{path.name} is stale: it was trained by vaelab {payload['vaelab_version']} "
            f"(commit {payload['git_commit'] or 'unknown'}) and differs from this run:\n  " + "\n  ".join(changed) +
            f"\nIt is not used. Retrain it with `python -m vaelab ship {name} --epochs {payload['epochs']}`.")
    loaded = copy.deepcopy(model).cpu()  # a copy: no random numbers drawn, the page's own run left as it is
    loaded.load_state_dict({k: v.float() if v.dtype == torch.float16 else v for k, v in payload["model"].items()})
    device = next(model.parameters()).device
    return Shipped(loaded.to(device).eval(), payload)


def prefer(recipe: Recipe, model: nn.Module, history: History, tag: str = "", objective=None,
           directory: Path = SHIPPED) -> tuple[nn.Module, History, str]:
    """The shipped, longer-trained version of the page's run when there is a current one, else the page's run;
    and a sentence saying which it is. $VAELAB_SHIPPED=off always keeps the page's run. When the shipped run is
    taken, `objective` (if given) is set to the state that run left it in, its adversary's weights included."""
    chosen, sentence = prefer_together({"run": Run(recipe, model, history, tag, objective)}, directory)
    return (*chosen["run"], sentence)


@dataclass
class Run:
    """A page's run as train_recipe made it, with what finds its shipped version (train_recipe's arguments)."""

    recipe: Recipe
    model: nn.Module
    history: History
    tag: str = ""
    objective: object = None  # None: the recipe's default objective; set to the shipped run's state when swapped


def prefer_together(runs: dict[str, Run], directory: Path = SHIPPED) -> tuple[dict, str]:
    """Several runs a page compares: every run's shipped version when each has a current one and all are of one
    length, since a comparison at unequal budgets would say nothing; else every page's run. Returns
    name -> (model, history), and a sentence saying which they are."""
    own = {name: (run.model, run.history) for name, run in runs.items()}
    steps = {len(history["loss"]) for _, history in own.values()}
    mine = f"this page's run{'s' if len(runs) > 1 else ''} ({', '.join(f'{n:,}' for n in sorted(steps))} steps)"
    switch = os.environ.get("VAELAB_SHIPPED", "").strip().lower()
    if switch in ("off", "0", "no", "false"):
        return own, f"{mine}; shipped checkpoints are switched off (VAELAB_SHIPPED={switch})"
    loaded, stale = {}, []
    for name, run in runs.items():
        try:
            loaded[name] = load(run.recipe, run.model, run.tag, run.objective, directory)
        except StaleCheckpointError as error:
            print(error, file=sys.stderr)
            stale.append(name)
    if stale:
        which = f" of {', '.join(stale)}" if len(runs) > 1 else ""
        return own, f"{mine}: the shipped checkpoint{which} is stale (see the message above)"
    missing = [name for name, shipped in loaded.items() if shipped is None]
    if missing:
        which = ", ".join(missing) if len(runs) > 1 else "it"
        return own, f"{mine}: vaelab ships no longer-trained checkpoint of {which}"
    if len({shipped.payload["steps"] for shipped in loaded.values()}) > 1:
        return own, f"{mine}: the shipped runs differ in length, and are compared only at equal budgets"
    for name, shipped in loaded.items():
        objective = runs[name].objective
        if objective is not None:
            objective.load_state_dict(shipped.payload["objective"])
            if getattr(objective, "adversary", None) is not None:
                objective.adversary.load_state_dict(shipped.payload["adversary"])
    first = next(iter(loaded.values()))
    plural = "s of these runs" if len(runs) > 1 else " of this run"
    return ({name: (shipped.model, shipped.history) for name, shipped in loaded.items()},
            f"the shipped checkpoint{plural}: {first.describe()}")


def seeds(experiment: Experiment, model: nn.Module, seeds: tuple[int, ...],
          directory: Path = SHIPPED) -> list[tuple[Shipped, object]] | None:
    """Every seed's shipped run of an experiment, each as (Shipped, its objective in the state that run left it in,
    an adversary's weights included); None, with the reason printed, when VAELAB_SHIPPED is off or any seed's file
    is missing or stale: a claim about training outcomes is then left to the page's own run."""
    if os.environ.get("VAELAB_SHIPPED", "").strip().lower() in ("off", "0", "no", "false"):
        print("shipped checkpoints are switched off (VAELAB_SHIPPED)", file=sys.stderr)
        return None
    found = []
    for seed in seeds:
        seeded = experiment.seeded(seed)
        objective = seeded.make_objective()
        try:
            run = load(seeded.recipe, model, seeded.tag, objective, directory)
        except StaleCheckpointError as error:
            print(error, file=sys.stderr)
            return None
        if run is None:
            print(f"vaelab ships no checkpoint of seed {seed} of this run", file=sys.stderr)
            return None
        objective.load_state_dict(run.payload["objective"])
        if getattr(objective, "adversary", None) is not None:
            objective.adversary.load_state_dict(run.payload["adversary"])
            objective.adversary.to(next(run.model.parameters()).device).eval()
        found.append((run, objective))
    return found


def shown(experiment: Experiment, **train_overrides) -> tuple[nn.Module, History, str]:
    """What a page shows of a named experiment: its run, trained now or loaded, then its shipped version (prefer)."""
    model, history = experiment.train(**train_overrides)
    return prefer(experiment.recipe, model, history, experiment.tag, experiment.make_objective())


def inventory(directory: Path = SHIPPED) -> list[dict]:
    """Every shipped checkpoint with its run, length, provenance and whether it is current for the installed code."""
    from .recipes import RECIPES
    rows = []
    for path in sorted(Path(directory).glob("*.pt")):
        payload = load_checkpoint(path, SHIPPED_FORMAT)
        experiment = RECIPES.get(payload["experiment"])
        if experiment is None:
            status = f"stale: no recipe {payload['experiment']!r} any more"
        else:
            experiment = experiment().seeded(payload.get("seed", 0))
            try:
                load(experiment.recipe, experiment.model_class(experiment.recipe.model), experiment.tag,
                     experiment.make_objective(), directory)
                status = "current"
            except StaleCheckpointError as error:
                status = "stale: " + "; ".join(line.strip() for line in str(error).splitlines()[1:-1])
        rows.append({"file": path.name, "recipe": payload["experiment"], "seed": payload.get("seed", 0),
                     "epochs": payload["epochs"],
                     "steps": payload["steps"], "recipe_steps": payload["recipe_steps"],
                     "minutes": payload["seconds_this_call"] / 60, "trained_on": payload["trained_on"],
                     "commit": payload["git_commit"], "MiB": path.stat().st_size / 2**20, "status": status})
    return rows
