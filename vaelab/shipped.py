"""Shipped checkpoints: the book's quick-mode runs trained far longer than a chapter can afford, installed with
vaelab (the README's "Shipped checkpoints" says how they are made and shown).

    run = RECIPES["book-vae-quick"]().train()          # this page's run, 300 steps (a vaelab.experiment.Trained)
    shown = shipped.prefer({"vae": run}, seeds=(0, 1, 2))  # the same run at 20 epochs, from three seeds, if shipped

A shipped checkpoint is the page's run but for its epochs. One whose run fields or model code (`code_digests`)
differ from the installed vaelab's is stale: `load` refuses it and names what changed. Weights are stored in half
precision where that moves the loss on a test batch by at most 1e-3 (relative), else in float32.
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
from .experiment import Experiment, Recipe, Trained, runs_dir
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
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
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
                # a module, or the module that defines the name (not a package re-exporting it)
                found.add(imported.__name__ if isinstance(imported, types.ModuleType)
                          else _defining_module(package, alias.name))
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
    """source_digest of `model_class`'s module and, transitively, of each vaelab module it imports."""
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
    """The objective on the recipe's first test batch, with fixed noise: how `ship` checks half-precision
    weights, and how a test checks that a loaded checkpoint computes what the trained run computed. Both networks
    (the model, and an adversary whose term enters the loss) are put in eval mode."""
    images = recipe.load_data("test", limit=recipe.train.batch_size).images.to(next(model.parameters()).device)
    if getattr(objective, "adversary", None) is not None:
        objective.adversary.eval()
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
    provenance = {"code": code_digests(experiment.model_class), "git_commit": _git_commit(),  # before training:
                  "vaelab_version": importlib.metadata.version("vaelab")}  # the code that trains, not later edits
    runs = runs_dir() / "shipping"
    start = time.perf_counter()
    # A discriminator is checked after every epoch on test images it never trained on (an arm whose adversary sits
    # at chance adds nothing); the run is resumed epoch by epoch, which is the same run (vaelab.fit).
    with_adversary = getattr(experiment.make_objective(), "adversary", None) is not None
    held_out = {"steps": [], "adversary_accuracy": []}
    test_images = recipe.load_data("test", limit=HELD_OUT_IMAGES).images if with_adversary else None
    for epoch in range(1, epochs + 1) if with_adversary else (epochs,):
        run = experiment.train(runs, epochs=epoch, progress=False)
        if with_adversary:
            held_out["steps"].append(run.steps)
            held_out["adversary_accuracy"].append(metrics.adversary_accuracy(run.objective.adversary, run.model,
                                                                             test_images))
    seconds = time.perf_counter() - start
    model, history, objective = run.model, run.history, run.objective  # the objective as training left it
    trained_epochs = len(history.epochs["loss"])  # not `epochs`: a dry run trains fewer, an older run more
    adversary = getattr(objective, "adversary", None)
    adversary_state = None if adversary is None else {k: v.cpu() for k, v in adversary.state_dict().items()}
    parameters = dict(model.named_parameters())
    trained = {k: v.cpu() for k, v in model.state_dict().items()}
    half = {k: v.half() if k in parameters else v for k, v in trained.items()}
    rounded = copy.deepcopy(model)
    rounded.load_state_dict({k: v.float() if k in parameters else v for k, v in half.items()})
    loss_full, loss_half = loss_on_test_batch(model, objective, recipe), loss_on_test_batch(rounded, objective, recipe)
    # Half precision halves the file; where its rounding moves the loss by more than the tolerance (it adds up
    # through a deep residual network: Rivera's moved 1.2e-3 in one run, 3e-4 in another) the weights stay float32.
    weights = half if abs(loss_half - loss_full) <= HALF_PRECISION_TOLERANCE * abs(loss_full) else trained
    payload = {
        "format": SHIPPED_FORMAT, "experiment": experiment_name, "seed": recipe.train.seed,
        "run": experiment.fields(objective), "run_digest": experiment.digest(objective),
        **provenance, "model_class": experiment.model_class.__name__, "model": weights,
        "objective": objective.state_dict(),
        "adversary": adversary_state,
        "epochs": trained_epochs, "steps": run.steps,
        "recipe_steps": run.steps // trained_epochs * recipe.train.epochs,
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


def describe(payload: dict) -> str:
    """How long a shipped run trained, and where, as a page says it (`python -m vaelab shipped` lists the commit)."""
    return f"trained {payload['epochs']} epochs on {payload['trained_on']}"


class Shipped:
    """A loaded shipped checkpoint: the model (float32, eval mode), its training history, and where it came from."""

    def __init__(self, model: nn.Module, payload: dict):
        self.model, self.payload = model, payload
        self.history = History(**{part: {k: v.tolist() for k, v in values.items()}
                                  for part, values in payload["history"].items()})


def load(experiment: Experiment, template: nn.Module, directory: Path = SHIPPED) -> Shipped | None:
    """The experiment's shipped checkpoint, loaded into a copy of `template` (a model of the experiment's class, whose
    device it takes); None when vaelab ships none. Raises StaleCheckpointError when it is stale."""
    recipe, model_class = experiment.recipe, experiment.model_class
    path = shipped_path(recipe, model_class, experiment.tag, directory)
    if not path.is_file():
        return None
    payload = load_checkpoint(path, SHIPPED_FORMAT)
    fields = experiment.fields()
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
    loaded = copy.deepcopy(template).cpu()  # a copy: no random numbers drawn, the page's own run left as it is
    loaded.load_state_dict({k: v.float() if v.dtype == torch.float16 else v for k, v in payload["model"].items()})
    device = next(template.parameters()).device
    return Shipped(loaded.to(device).eval(), payload)


def _as_trained(experiment: Experiment, shipped: Shipped) -> Trained:
    """A shipped run as a page holds one, its objective in the state that run left it (an adversary's weights too)."""
    objective = experiment.make_objective()
    objective.load_state_dict(shipped.payload["objective"])
    if getattr(objective, "adversary", None) is not None:
        objective.adversary.load_state_dict(shipped.payload["adversary"])
        objective.adversary.to(next(shipped.model.parameters()).device).eval()
    return Trained(experiment, shipped.model, shipped.history, objective, trained_now=False, payload=shipped.payload)


@dataclass
class Shown:
    """What a page shows of the runs it compares: name -> one run per seed (seed order), and why these."""

    runs: dict[str, list[Trained]]
    reason: str

    @property
    def shipped(self) -> bool:
        return all(run.payload is not None for runs in self.runs.values() for run in runs)

    @property
    def n_seeds(self) -> int:
        return len(next(iter(self.runs.values())))

    def first(self) -> dict[str, Trained]:
        """Each name's run of the first seed: what a page's figures show."""
        return {name: runs[0] for name, runs in self.runs.items()}


def prefer(runs: dict[str, Trained], seeds: tuple[int, ...] | None = None, directory: Path = SHIPPED) -> Shown:
    """The shipped, longer-trained versions of a page's runs: at every seed of `seeds` (default: each run's own) when
    every run has a current one at each and all are of one length (a comparison at unequal budgets would say
    nothing), else at the first seed alone, else the page's own runs, one seed each. $VAELAB_SHIPPED=off always keeps
    the page's runs."""
    if not runs:
        raise ValueError("prefer needs at least one run")
    own = {name: [run] for name, run in runs.items()}
    steps = sorted({run.steps for run in runs.values()})
    mine = f"this page's run{'s' if len(runs) > 1 else ''} ({', '.join(f'{n:,}' for n in steps)} steps)"
    switch = os.environ.get("VAELAB_SHIPPED", "").strip().lower()
    if switch in ("off", "0", "no", "false"):
        return Shown(own, f"{mine}; shipped checkpoints are switched off (VAELAB_SHIPPED={switch})")
    problems = {}  # (name, seed) -> why that run has no current shipped version

    def find(name: str, seed: int | None) -> Trained | None:
        experiment = runs[name].experiment if seed is None else runs[name].experiment.seeded(seed)
        try:
            found = load(experiment, runs[name].model, directory)
        except StaleCheckpointError as error:
            if (name, seed) not in problems:
                print(error, file=sys.stderr)
            problems[name, seed] = "is stale (see the message above)"
            return None
        if found is None:
            problems[name, seed] = "is not shipped"
            return None
        return _as_trained(experiment, found)

    seeds = (None,) if seeds is None else tuple(seeds)  # None: each run's own seed
    why_not = []  # why the attempts before failed
    for wanted in dict.fromkeys((seeds, seeds[:1])):  # every seed, else the first
        shown, reason = {}, None
        for name in runs:
            shown[name] = []
            for seed in wanted:
                run = find(name, seed)
                if run is None:
                    which = name if seed is None else f"{name} from seed {seed}"
                    reason = f"the longer-trained run of {which} {problems[name, seed]}"
                    break
                shown[name].append(run)
            if reason:
                break
        if reason is None and len({run.steps for found in shown.values() for run in found}) > 1:
            reason = "the shipped runs differ in length, and are compared only at equal budgets"
        if reason is None:
            plural = "s" if len(runs) * len(wanted) > 1 else ""
            count = f"{len(wanted)} seed{'s' if len(wanted) > 1 else ''}"
            first = describe(shown[next(iter(runs))][0].payload)
            return Shown(shown, "; ".join(why_not + [f"the shipped checkpoint{plural} ({count}), {first}"]))
        why_not.append(reason)
    return Shown(own, f"{mine}: {why_not[-1]}")


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
                with torch.random.fork_rng(devices=[]):  # a model to load into; its random weights are replaced
                    template = experiment.model_class(experiment.recipe.model)
                load(experiment, template, directory)
                status = "current"
            except StaleCheckpointError as error:
                status = "stale: " + "; ".join(line.strip() for line in str(error).splitlines()[1:-1])
        rows.append({"file": path.name, "recipe": payload["experiment"], "seed": payload.get("seed", 0),
                     "epochs": payload["epochs"], "steps": payload["steps"], "recipe_steps": payload["recipe_steps"],
                     "minutes": payload["seconds_this_call"] / 60, "trained_on": payload["trained_on"],
                     "commit": payload["git_commit"], "MiB": path.stat().st_size / 2**20, "status": status})
    return rows
