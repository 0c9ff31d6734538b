"""The command line: train a named recipe, evaluate a checkpoint.

    python -m vaelab train splitvae-mnist            # or `vaelab train ...`; resumes an interrupted run
    python -m vaelab evaluate runs/splitvae_mnist_SplitVAE_1a2b3c4d.pt --samples 10000
    python -m vaelab recipes                          # what `train` knows, with estimated GPU times
    python -m vaelab ship book-vae-quick --epochs 20  # the book's run trained longer, shipped with vaelab
    python -m vaelab shipped                          # the shipped checkpoints, and whether each is current
    torchrun --nproc_per_node=4 -m vaelab train splitvae-celeba --precision bf16 --channels-last
"""
import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from . import budget, metrics, recipes, shipped
from .checkpoint import CheckpointError, load_checkpoint


def model_classes() -> dict[str, tuple[type[nn.Module], type]]:
    """Every model a checkpoint can hold, by class name, with its config class."""
    from .how_to_train_your_vae import HowToTrainYourVAE, HowToTrainYourVAEConfig
    from .self_supervised_vae import SelfSupervisedVAE, SelfSupervisedVAEConfig
    from .split_vae import SplitVAE
    from .vae import VAE, VAEConfig
    return {"VAE": (VAE, VAEConfig), "SplitVAE": (SplitVAE, VAEConfig),
            "SelfSupervisedVAE": (SelfSupervisedVAE, SelfSupervisedVAEConfig),
            "HowToTrainYourVAE": (HowToTrainYourVAE, HowToTrainYourVAEConfig)}


def load_shipped_model(path: Path) -> tuple[nn.Module, dict] | None:
    """A shipped checkpoint's model (refused if stale), with the payload fields evaluate reads; None if `path` is
    not a shipped checkpoint."""
    try:
        payload = load_checkpoint(path, shipped.SHIPPED_FORMAT)
    except CheckpointError:
        return None
    if payload["experiment"] not in recipes.RECIPES:
        raise CheckpointError(f"{path} was shipped from the recipe {payload['experiment']!r}, "
                              "which vaelab no longer has")
    experiment = recipes.RECIPES[payload["experiment"]]().seeded(payload.get("seed", 0))
    recipe = experiment.recipe
    loaded = shipped.load(experiment, experiment.model_class(recipe.model), Path(path).parent)
    name = shipped.shipped_path(recipe, experiment.model_class, experiment.tag).name
    if loaded is None or name != Path(path).name:
        raise CheckpointError(f"{path} is a shipped checkpoint under another name than vaelab gives it ({name})")
    meta = {"recipe": recipe.name, "dataset": recipe.dataset, "pad_to_32": recipe.pad_to_32,
            "vaelab_version": payload["vaelab_version"]}
    return loaded.model, {**payload, "metadata": meta, "epoch": payload["epochs"]}


def load_model(path: Path) -> tuple[nn.Module, dict]:
    """The model of a training checkpoint, or of a shipped one."""
    shipped_model = load_shipped_model(path) if Path(path).is_file() else None
    if shipped_model is not None:
        return shipped_model
    payload = load_checkpoint(path)
    classes = model_classes()
    if payload["model_class"] not in classes:
        raise CheckpointError(f"{path} holds a {payload['model_class']}, which vaelab does not know")
    model_class, config_class = classes[payload["model_class"]]
    model = model_class(config_class(**payload["model_config"]))
    model.load_state_dict(payload["model"])
    return model.eval(), payload


def evaluate(path: Path, out: Path, **protocol) -> dict:
    """Measure a checkpoint by vaelab.metrics.evaluate's protocol; write metrics.json and sample grids to out."""
    model, payload = load_model(path)
    meta = payload.get("metadata", {})
    if "dataset" not in meta:
        raise CheckpointError(f"{path} does not say which data set it was trained on (not written by a recipe)")
    measures, images = metrics.evaluate(model, meta["dataset"], pad_to_32=meta["pad_to_32"], **protocol)
    result = {"checkpoint": str(path), "recipe": meta.get("recipe"), "epoch": payload["epoch"],
              "vaelab_version": meta.get("vaelab_version"), **measures}
    from .viz import grid_png  # here, not at the top: the rest of the command line needs no figure libraries

    out.mkdir(parents=True, exist_ok=True)
    for name, generated in images.items():
        (out / f"samples_{name}.png").write_bytes(grid_png(generated[:64]))
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


@contextmanager
def joined_process_group():
    """Under torchrun (WORLD_SIZE > 1): join the process group, NCCL on GPUs (one per process), gloo on CPUs.
    Yields this process's rank (0 without torchrun)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield 0
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield torch.distributed.get_rank()
    finally:
        torch.distributed.destroy_process_group()


def recipe_table() -> str:
    """Every recipe (not the old aliases) with its data, size, parameters, steps, training FLOPs and estimated
    training time per GPU class (at the card's fastest precision; the T4 at fp32 too), by vaelab.budget."""
    rows = []
    for name, make in recipes.RECIPES.items():
        if name in recipes.RECIPE_ALIASES:
            continue
        experiment = make()
        recipe = experiment.recipe
        cost = budget.experiment_cost(experiment)
        times = [budget.format_duration(cost.seconds(gpu)) for gpu in budget.GPU_CLASSES]
        rows.append([name, recipe.dataset, f"{recipe.model.image_size}x{recipe.model.image_size}",
                     f"{budget.parameter_count(experiment) / 1e6:.2f}M", f"{budget.training_steps(recipe):,}",
                     budget.format_flops(cost.training), times[0], budget.format_duration(cost.seconds("T4", "fp32")),
                     *times[1:]])
    header = ["recipe", "data", "size", "parameters", "steps", "training", "T4 fp16", "T4 fp32",
              *(f"{gpu} {budget.fastest_precision(gpu)}" for gpu in budget.GPU_CLASSES[1:])]
    return budget.table(rows, header, right=set(range(3, len(header))))


def chapter_table() -> str:
    """Each chapter's gpu budget: its runs trained from scratch and its evaluation, in FLOPs and estimated time."""
    rows = []
    for chapter, work in recipes.CHAPTER_WORK["gpu"].items():
        cost = budget.chapter_cost(work)
        rows.append([str(chapter), str(len(work.trains)), budget.format_flops(cost.training),
                     budget.format_flops(cost.evaluation), f"{cost.minutes('T4'):.1f} min",
                     *(f"{cost.minutes(gpu):.1f} min" for gpu in budget.GPU_CLASSES[1:])])
    header = ["chapter (gpu budget)", "runs", "training", "evaluation", "T4", *budget.GPU_CLASSES[1:]]
    return budget.table(rows, header, right=set(range(1, len(header))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vaelab", description=__doc__.split("\n")[0],
                                     epilog="recipes: " + ", ".join(recipes.RECIPES))
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a recipe (resuming its checkpoint if one exists)",
                                epilog="recipes: " + ", ".join(recipes.RECIPES))
    train.add_argument("recipe", choices=list(recipes.RECIPES), metavar="RECIPE")
    train.add_argument("--epochs", type=int, help="train this many epochs in all (default: the recipe's)")
    train.add_argument("--device", help="cuda, mps or cpu (default: the best there is)")
    train.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                       help="bf16, fp16: autocast the forward pass (fp16 with a gradient scaler; another run); "
                            "auto: bf16 where the GPU has it, else fp16, fp32 on a CPU")
    train.add_argument("--channels-last", action="store_true", help="NHWC memory layout for the convolutions")
    train.add_argument("--compile", action="store_true", help="torch.compile the forward pass and loss")
    evaluate_cmd = commands.add_parser("evaluate", help="sample a checkpoint and measure it; writes metrics.json")
    evaluate_cmd.add_argument("checkpoint", type=Path)
    evaluate_cmd.add_argument("--samples", type=int, default=10_000, help="generated images (the papers: 10,000)")
    evaluate_cmd.add_argument("--features", choices=["auto", "inception", "classifier"], default="auto",
                              help="inception: FID; classifier: the offline MNIST/Fashion-MNIST classifier")
    evaluate_cmd.add_argument("--weights", help="a local copy of the FID Inception weights")
    evaluate_cmd.add_argument("--importance-samples", type=int, default=512,
                              help="K of the importance-weighted bpd (likelihood models; the paper: 512)")
    evaluate_cmd.add_argument("--likelihood-images", type=int, default=1000,
                              help="test images whose bpd is measured (likelihood models)")
    evaluate_cmd.add_argument("--out", type=Path, help="where to write metrics.json (default: beside the checkpoint)")
    ship_cmd = commands.add_parser("ship", help="train a recipe's run on to more epochs and write it, with its "
                                   "provenance, as a shipped checkpoint (vaelab/shipped/) that chapters show")
    ship_cmd.add_argument("recipe", choices=list(recipes.RECIPES), metavar="RECIPE")
    ship_cmd.add_argument("--epochs", type=int, required=True, help="epochs in all (more than the recipe's)")
    ship_cmd.add_argument("--seed", type=int, default=0, help="the training seed (default 0, the page's run's)")
    ship_cmd.add_argument("--out", type=Path, default=shipped.SHIPPED, help="folder (default: vaelab/shipped)")
    commands.add_parser("shipped", help="list the shipped checkpoints and whether each is current")
    commands.add_parser("recipes", help="list the recipes")
    args = parser.parse_args(argv)

    try:
        if args.command == "recipes":
            print(recipe_table())
            print()
            print(chapter_table())
        elif args.command == "train":
            overrides = {k: v for k, v in (("epochs", args.epochs), ("device", args.device),
                                           ("precision", args.precision)) if v is not None}
            overrides |= {k: True for k in ("channels_last", "compile") if getattr(args, k)}
            experiment = recipes.RECIPES[args.recipe]().with_train(**overrides)
            with joined_process_group() as rank:
                run = experiment.train(progress=rank == 0)
            if rank == 0:
                print("finished: " + "  ".join(f"{k} {v[-1]:.4g}" for k, v in run.history.epochs.items()))
                checkpoint = experiment.checkpoint(objective=run.objective)
                print(f"checkpoint: {checkpoint}\n  measure it: python -m vaelab evaluate {checkpoint}")
        elif args.command == "shipped":
            print("| recipe | seed | epochs | steps (the page's run) | training | trained on | commit | MiB | status |")
            print("|---|---|---|---|---|---|---|---|---|")
            for r in shipped.inventory():
                print(f"| `{r['recipe']}` | {r['seed']} | {r['epochs']} | {r['steps']:,} ({r['recipe_steps']:,}) | "
                      f"{r['minutes']:.1f} min | {r['trained_on']} | {r['commit']} | {r['MiB']:.1f} | {r['status']} |")
        elif args.command == "ship":
            path = shipped.ship(recipes.RECIPES[args.recipe]().seeded(args.seed), args.epochs, args.out,
                                experiment_name=args.recipe)
            print(f"written {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        else:
            if args.samples < 2:
                parser.error("--samples must be at least 2")
            out = args.out or args.checkpoint.with_suffix("")
            result = evaluate(args.checkpoint, out, samples=args.samples, features=args.features,
                              weights=args.weights, likelihood_images=args.likelihood_images,
                              importance_samples=args.importance_samples, progress=True)
            print(json.dumps(result, indent=2))
            print(f"written to {out / 'metrics.json'}")
    except (CheckpointError, ValueError, FileNotFoundError) as error:
        print(f"vaelab: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
