"""Training speed of vaelab.fit against the plain way, in one run, as a ratio.

    python tests/benchmarks/bench_training.py                      # the Split-VAE MNIST preset on a GPU
    python tests/benchmarks/bench_training.py --preset quick --steps 5 --device cpu

Both ways train the same network (a Split-VAE preset) on the same random images of its size for the same number of
steps, after the same warm-up: the plain way is a torch DataLoader over a TensorDataset and an fp32 Adam loop that
computes the Split-VAE loss and reads it every step; vaelab's way is `fit` with its checks, history and objective,
the data resident on the GPU, bf16 autocast, channels-last and torch.compile (on a GPU; `--fit-options none` turns
them off), reading the losses every 50 steps. Reported: images per second each, their ratio, and the FLOPs of one
training step counted by torch's FlopCounterMode (forward and backward of every matmul and convolution), which on
a GPU with a known bf16 peak give the fraction of that peak, and the sustained rate of counted FLOPs, the number
vaelab.budget assumes per GPU class (compare it with budget.SUSTAINED_TFLOPS and correct the table from it). Run as a
script (or with --recipes), it then prints every recipe's FLOPs per step and estimated training time per GPU
class (vaelab.budget).
"""
import argparse
import sys
import time

import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from vaelab import PRESETS, BalancedGaussianELBO, TrainConfig, fit
from vaelab.split_vae import SplitVAE

BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16, the vendors' data sheets


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(model, images, steps: int, batch_size: int, device: torch.device) -> float:
    """The way a tutorial writes it: DataLoader, Adam, loss, backward, step. Returns seconds for `steps` steps."""
    objective = BalancedGaussianELBO(beta=8.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(images), batch_size=batch_size, shuffle=True, drop_last=True)
    model.train()
    synchronize(device)
    start = time.perf_counter()
    done, losses = 0, []
    while done < steps:
        for (x,) in loader:
            terms = objective(model, x.to(device))
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            objective.update(terms)
            losses.append(terms["loss"].item())  # what a tutorial loop logs, one host-device round trip per step
            done += 1
            if done == steps:
                break
    synchronize(device)
    return time.perf_counter() - start


def with_fit(model, images, steps: int, batch_size: int, device: torch.device, options: dict) -> float:
    config = TrainConfig(epochs=1, batch_size=batch_size, progress=False, device=str(device), **options)
    synchronize(device)
    start = time.perf_counter()
    fit(model, BalancedGaussianELBO(beta=8.0), images[: steps * batch_size], config)
    synchronize(device)
    return time.perf_counter() - start


def step_flops(model, batch: torch.Tensor) -> int:
    objective = BalancedGaussianELBO(beta=8.0)
    with FlopCounterMode(display=False) as counter:
        objective(model, batch)["loss"].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="mnist", choices=["mnist", "quick"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--recipes", action="store_true",
                        help="then print every recipe's FLOPs per step and estimated time per GPU class (the script "
                             "does by default; about a minute of counting on a CPU)")
    parser.add_argument("--fit-options", choices=["fast", "none"], default="fast",
                        help="fast: bf16, channels-last and torch.compile on a GPU (fp32 on a CPU); none: fp32 eager")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    options = {}
    if args.fit_options == "fast" and device.type == "cuda":
        options = {"precision": "bf16", "channels_last": True, "compile": True}
    config = PRESETS[args.preset]
    torch.manual_seed(0)
    images = torch.rand((args.steps + args.warmup) * args.batch_size, config.in_channels, config.image_size,
                        config.image_size)

    def fresh():
        torch.manual_seed(0)
        return SplitVAE(config).to(device)

    plain_loop(fresh(), images, args.warmup, args.batch_size, device)  # kernels, allocator, caches
    plain_seconds = plain_loop(fresh(), images, args.steps, args.batch_size, device)
    if options.get("compile"):  # compile outside the timed run: its first steps are compilation
        with_fit(fresh(), images, args.warmup, args.batch_size, device, options)
    fit_seconds = with_fit(fresh(), images, args.steps, args.batch_size, device, options)
    flops = step_flops(fresh(), images[: args.batch_size].to(device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    result = {"device": name, "preset": args.preset, "steps": args.steps, "batch_size": args.batch_size,
              "fit_options": ", ".join(f"{k}={v}" for k, v in options.items()) or "fp32, eager",
              "plain_images_per_s": args.steps * args.batch_size / plain_seconds,
              "fit_images_per_s": args.steps * args.batch_size / fit_seconds,
              "fit_over_plain": plain_seconds / fit_seconds, "gflops_per_step": flops / 1e9}
    peak = next((tflops for key, tflops in BF16_PEAK_TFLOPS.items() if key in name), None)
    if peak:
        result["fit_fraction_of_bf16_peak"] = flops * args.steps / fit_seconds / (peak * 1e12)
    result["fit_sustained_tflops"] = flops * args.steps / fit_seconds / 1e12
    for key, value in result.items():
        print(f"{key:28s} {value:.4g}" if isinstance(value, float) else f"{key:28s} {value}")
    if args.recipes:
        print()
        print(recipe_step_table())
    return result


def recipe_step_table() -> str:
    """Each recipe's FLOPs per training step and its estimated training time per GPU class."""
    from vaelab import budget, recipes

    rows = []
    for name, make in recipes.RECIPES.items():
        if name in recipes.RECIPE_ALIASES:
            continue
        experiment = make()
        cost = budget.experiment_cost(experiment)
        rows.append([name, budget.format_flops(budget.step_flops(experiment)), f"{budget.training_steps(experiment.recipe):,}",
                     *(budget.format_duration(cost.seconds(gpu)) for gpu in budget.GPU_CLASSES)])
    header = ["recipe", "per step", "steps", *(f"{g} {budget.fastest_precision(g)}" for g in budget.GPU_CLASSES)]
    return budget.table(rows, header, right=set(range(1, len(header))))


if __name__ == "__main__":
    main(["--recipes", *sys.argv[1:]])
