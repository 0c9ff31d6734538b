"""The command line: train a named recipe, evaluate a checkpoint.

    python -m vaelab train splitvae-mnist            # or `vaelab train ...`; resumes an interrupted run
    python -m vaelab evaluate runs/splitvae_mnist_SplitVAE_1a2b3c4d.pt --samples 10000
    python -m vaelab recipes                          # what `train` knows

`evaluate` writes <out>/metrics.json, naming the distance's implementation, the sample count and the reference
split, and sample grids beside it.
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

from . import data, metrics, recipes, viz
from .checkpoint import CheckpointError, load_checkpoint
from .train import pick_device


def model_classes() -> dict[str, tuple[type[nn.Module], type]]:
    """Every model a checkpoint can hold, by class name, with its config class."""
    from .how_to_train_your_vae import HowToTrainYourVAE, HowToTrainYourVAEConfig
    from .self_supervised_vae import SelfSupervisedVAE, SelfSupervisedVAEConfig
    from .split_vae import SplitVAE
    from .vae import VAE, VAEConfig
    return {"VAE": (VAE, VAEConfig), "SplitVAE": (SplitVAE, VAEConfig),
            "SelfSupervisedVAE": (SelfSupervisedVAE, SelfSupervisedVAEConfig),
            "HowToTrainYourVAE": (HowToTrainYourVAE, HowToTrainYourVAEConfig)}


def load_model(path: Path) -> tuple[nn.Module, dict]:
    payload = load_checkpoint(path)
    classes = model_classes()
    if payload["model_class"] not in classes:
        raise CheckpointError(f"{path} holds a {payload['model_class']}, which vaelab does not know")
    model_class, config_class = classes[payload["model_class"]]
    model = model_class(config_class(**payload["model_config"]))
    model.load_state_dict(payload["model"])
    return model.eval(), payload


@torch.no_grad()
def samples(model: nn.Module, n: int, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([model.sample(min(batch_size, n - i)).cpu() for i in range(0, n, batch_size)])


def evaluate(path: Path, n: int, features: str, out: Path, weights: str | None) -> dict:
    model, payload = load_model(path)
    meta = payload.get("metadata", {})
    if "dataset" not in meta:
        raise CheckpointError(f"{path} does not say which data set it was trained on (not written by a recipe)")
    model.to(pick_device())
    test = data.load(meta["dataset"], "test", pad_to_32=meta["pad_to_32"], limit=min(n, 10_000)).images
    if features == "auto":
        features = "inception" if torch.cuda.is_available() else "classifier"
    if features == "inception":
        extractor, implementation = metrics.InceptionFeatures(weights), "FID: pytorch-fid's InceptionV3 pool features"
    else:
        extractor = metrics.classifier_features(meta["dataset"])
        implementation = f"Frechet distance in the features of {extractor.name} (not FID)"
    reference = metrics.feature_statistics(extractor, test)
    torch.manual_seed(0)
    prior = samples(model, n)
    result = {"checkpoint": str(path), "recipe": meta.get("recipe"), "epoch": payload["epoch"],
              "vaelab_version": meta.get("vaelab_version"), "distance": implementation,
              "samples": n, "reference": f"{meta['dataset']} test split, its first {len(test):,} images",
              "prior": metrics.frechet_distance_between(extractor, prior, reference)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples_prior.png").write_bytes(viz.grid_png(prior[:64]))
    mu, _ = metrics.encode(model, test[:2])
    if mu.dim() == 2:  # a flat latent code: the ex-post GMM and the inactive variables apply
        train = data.load(meta["dataset"], "train", pad_to_32=meta["pad_to_32"], limit=10_000).images
        gmm = metrics.fit_latent_gmm(model, train, metrics.paper_gmm_components(meta["dataset"]))
        ex_post = metrics.decode(model, gmm.sample(n))
        result["gmm"] = metrics.frechet_distance_between(extractor, ex_post, reference)
        (out / "samples_gmm.png").write_bytes(viz.grid_png(ex_post[:64]))
        stats = metrics.latent_statistics(model, test)
        result["inactive_latents"], result["latent_dim"] = stats.num_inactive, len(stats.inactive)
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vaelab", description=__doc__.split("\n")[0],
                                     epilog="recipes: " + ", ".join(recipes.RECIPES))
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a recipe (resuming its checkpoint if one exists)",
                                epilog="recipes: " + ", ".join(recipes.RECIPES))
    train.add_argument("recipe", choices=list(recipes.RECIPES), metavar="RECIPE")
    train.add_argument("--epochs", type=int, help="train this many epochs in all (default: the recipe's)")
    train.add_argument("--device", help="cuda, mps or cpu (default: the best there is)")
    evaluate_cmd = commands.add_parser("evaluate", help="sample a checkpoint and measure it; writes metrics.json")
    evaluate_cmd.add_argument("checkpoint", type=Path)
    evaluate_cmd.add_argument("--samples", type=int, default=10_000, help="generated images (the papers: 10,000)")
    evaluate_cmd.add_argument("--features", choices=["auto", "inception", "classifier"], default="auto",
                              help="inception: FID; classifier: the offline MNIST/Fashion-MNIST classifier")
    evaluate_cmd.add_argument("--weights", help="a local copy of the FID Inception weights")
    evaluate_cmd.add_argument("--out", type=Path, help="where to write metrics.json (default: beside the checkpoint)")
    commands.add_parser("recipes", help="list the recipes")
    args = parser.parse_args(argv)

    try:
        if args.command == "recipes":
            for name, make in recipes.RECIPES.items():
                recipe = make().recipe
                print(f"{name:24s} {recipe.dataset:14s} {recipe.train.epochs:>4d} epochs  ({recipe.name})")
        elif args.command == "train":
            overrides = {k: v for k, v in (("epochs", args.epochs), ("device", args.device)) if v is not None}
            model, history = recipes.RECIPES[args.recipe]().train(**overrides)
            print("finished: " + "  ".join(f"{k} {v[-1]:.4g}" for k, v in history.epochs.items()))
        else:
            if args.samples < 2:
                parser.error("--samples must be at least 2")
            out = args.out or args.checkpoint.with_suffix("")
            result = evaluate(args.checkpoint, args.samples, args.features, out, args.weights)
            print(json.dumps(result, indent=2))
            print(f"written to {out / 'metrics.json'}")
    except (CheckpointError, ValueError, FileNotFoundError) as error:
        print(f"vaelab: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
