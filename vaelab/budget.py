"""How long a run takes on a GPU: its floating-point operations, measured, over a stated sustained throughput.

    from vaelab import budget, recipes
    cost = budget.experiment_cost(recipes.RECIPES["book-vae-gpu"]())
    cost.minutes("T4")                  # at the fastest precision a T4 has (fp16 with a gradient scaler)
    budget.chapter_cost(recipes.CHAPTER_WORK["gpu"][4]).minutes("T4")

torch.utils.flop_counter.FlopCounterMode counts the matrix products and convolutions (forward and backward) of a
real batch of PROBE_BATCH images, scaled to the recipe's batch: every counted operation is linear in the batch
(tests check it), and a real batch runs every branch of the objective, on any machine, in about a second. What the
counter leaves out (element-wise operations, normalisations, the optimiser, data movement) costs time too, so the
sustained throughputs below are rates of *counted* operations, well under the cards' peaks.
"""
import functools
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from . import data

PROBE_BATCH = 2  # images per counted step: the fewest batch normalisation accepts

# Peak dense rates of each card, in TFLOP/s (NVIDIA's data sheets; H100 is the SXM card; T4 has no bf16, V100-era
# cards neither, so their fast path is fp16 with a gradient scaler). "fp32" on A100/H100 runs convolutions as TF32
# (PyTorch's default for cuDNN) and is quoted at the fp32 CUDA-core rate, the rate of the rest of the step.
PEAK_TFLOPS = {
    "T4": {"fp32": 8.1, "fp16": 65.0},
    "L4": {"fp32": 30.3, "bf16": 121.0},
    "A100": {"fp32": 19.5, "bf16": 312.0},
    "H100": {"fp32": 67.0, "bf16": 989.0},
}

# The assumption every estimate rests on: the sustained rate of counted operations, in TFLOP/s, that the book's
# networks reach. They are small convolutional networks (32x32 to 64x64 images, 16 to 512 channels, batches of 32 to
# 100), so a step is bounded as much by memory traffic and kernel launches as by arithmetic: we assume a quarter of
# the fp32 peak (a third on the T4), and 6% (T4) to 10-12% of the tensor cores' peak with autocast, which puts mixed
# precision at 2 to 4 times fp32; the T4's include the slowdown under its 70 W power cap. Not yet checked on a card.
SUSTAINED_TFLOPS = {
    "T4": {"fp32": 2.5, "fp16": 4.0},
    "L4": {"fp32": 6.0, "bf16": 14.0},
    "A100": {"fp32": 5.0, "bf16": 35.0},
    "H100": {"fp32": 15.0, "bf16": 100.0},
}
GPU_CLASSES = tuple(SUSTAINED_TFLOPS)


def fastest_precision(gpu: str) -> str:
    """The fastest precision the card trains in: bf16 where it has it, else fp16 (with a gradient scaler)."""
    return "bf16" if "bf16" in _rates(gpu) else "fp16"


def sustained_flops(gpu: str, precision: str = "fastest") -> float:
    """The assumed sustained rate of counted operations, FLOP/s, of a GPU class at a precision."""
    rates = _rates(gpu)
    precision = fastest_precision(gpu) if precision == "fastest" else precision
    if precision not in rates:
        raise ValueError(f"{gpu} has no {precision} rate here; it has {', '.join(rates)}")
    return rates[precision] * 1e12


def _rates(gpu: str) -> dict[str, float]:
    if gpu not in SUSTAINED_TFLOPS:
        raise ValueError(f"unknown GPU class {gpu!r}; the classes are {', '.join(GPU_CLASSES)}")
    return SUSTAINED_TFLOPS[gpu]


def count_flops(computation: Callable[[], object]) -> int:
    """The FLOPs of matrix products and convolutions that `computation()` dispatches (its backward passes too)."""
    with FlopCounterMode(display=False) as counter:
        computation()
    return counter.get_total_flops()


@dataclass(frozen=True)
class Cost:
    """FLOPs of a piece of work. Training runs under autocast at the card's fastest precision; evaluation
    (sampling, features, importance samples) runs in fp32, as vaelab.metrics computes."""

    training: int = 0
    evaluation: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.training + other.training, self.evaluation + other.evaluation)

    def __mul__(self, times: int) -> "Cost":
        return Cost(self.training * times, self.evaluation * times)

    __rmul__ = __mul__

    @property
    def total(self) -> int:
        return self.training + self.evaluation

    def seconds(self, gpu: str, precision: str = "fastest") -> float:
        """Estimated seconds on the GPU class: training at `precision`, evaluation at fp32."""
        return self.training / sustained_flops(gpu, precision) + self.evaluation / sustained_flops(gpu, "fp32")

    def minutes(self, gpu: str, precision: str = "fastest") -> float:
        return self.seconds(gpu, precision) / 60


def probe_images(channels: int, size: int, n: int = PROBE_BATCH) -> torch.Tensor:
    """n random 8-bit images in [0,1] (k/255, which the discretised likelihoods require)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, channels, size, size), generator=generator).float() / 255


def training_step_flops(model: nn.Module, objective, image_shape: tuple[int, int, int], batch_size: int) -> int:
    """FLOPs of one of fit's optimiser steps on a batch of `batch_size` images: the objective's forward pass and
    the backward passes fit takes (the model's loss into the model's weights; an adversary's loss into its own)."""
    x = probe_images(image_shape[0], image_shape[1])
    adversary = getattr(objective, "adversary", None)
    networks = [model] if adversary is None else [model, adversary]
    for network in networks:
        network.train()

    def step():
        terms = objective(model, x)
        terms["loss"].backward(inputs=list(model.parameters()), retain_graph=adversary is not None)
        if adversary is not None:
            terms["adversary_loss"].backward(inputs=list(adversary.parameters()))

    flops = count_flops(step)
    for network in networks:
        network.zero_grad(set_to_none=True)
    return flops * batch_size // PROBE_BATCH


def sampling_flops(model: nn.Module, n: int) -> int:
    """FLOPs of model.sample(n): n images drawn from the model's p(x)."""
    model.eval()
    return count_flops(lambda: model.sample(1)) * n  # evaluation mode: no batch statistics, one image is exact


def importance_flops(model: nn.Module, image_shape: tuple[int, int, int], images: int, k: int) -> int:
    """FLOPs of vaelab.metrics.log_likelihood_bounds with k importance samples on `images` images: a part per
    image (the encoder) and a part per sample (the decoder), read off counts at k = 1 and k = 2."""
    per_image, per_sample = _importance_parts(model, image_shape)
    return (per_image + per_sample * k) * images


def encoding_flops(model: nn.Module, image_shape: tuple[int, int, int], images: int) -> int:
    """FLOPs of encoding `images` images (vaelab.metrics.encode): the per-image part of importance_flops, which is
    the encoder's pass (a model whose importance weights run everything per sample has none apart)."""
    return _importance_parts(model, image_shape)[0] * images


def _importance_parts(model: nn.Module, image_shape: tuple[int, int, int]) -> tuple[int, int]:
    from .metrics.likelihood import gaussian_log_likelihood, log_likelihood_bounds

    # a model without its own importance weights needs a likelihood; its cost is element-wise: not counted
    log_likelihood = None if hasattr(model, "log_importance_weights") else gaussian_log_likelihood(1.0)
    x = probe_images(image_shape[0], image_shape[1], n=1)
    one, two = (count_flops(lambda k=k: log_likelihood_bounds(model, x, log_likelihood, k=k, device="cpu"))
                for k in (1, 2))
    per_sample = two - one
    return one - per_sample, per_sample


@functools.cache
def inception_flops_per_image() -> int:
    """FLOPs of one image's FID features (pytorch-fid's InceptionV3 at 299x299), counted on the architecture with
    random weights: the count does not depend on the weights."""
    import torchvision

    from .metrics.inception import fid_inception

    state = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                            num_classes=1008).state_dict()
    net = fid_inception(state).eval()
    x = torch.rand(1, 3, 299, 299)
    with torch.no_grad():
        return count_flops(lambda: net(x))


@functools.cache
def classifier_flops_per_image(channels: int, size: int) -> int:
    """FLOPs of one image's features in the offline classifier (vaelab.metrics.classifier), which reads 28x28
    images (a 32x32 image padded from 28x28 is cropped back first)."""
    from .metrics.classifier import SmallClassifier

    size = 28 if size == 32 else size
    net = SmallClassifier().eval()
    x = torch.rand(PROBE_BATCH, channels, size, size)
    with torch.no_grad():
        return count_flops(lambda: net(x)) // PROBE_BATCH


def feature_flops(features: str, image_shape: tuple[int, int, int], images: int) -> int:
    """FLOPs of the Fréchet features ("inception" or "classifier") of `images` images."""
    if features == "inception":
        return inception_flops_per_image() * images
    if features == "classifier":
        return classifier_flops_per_image(image_shape[0], image_shape[1]) * images
    raise ValueError(f"features must be 'inception' or 'classifier', got {features!r}")


def training_images(recipe) -> int:
    """Images of the recipe's training split that it trains on (its train_limit, else the whole split)."""
    full = data.SPLIT_SIZES[recipe.dataset]["train"]
    return full if recipe.train_limit is None else min(recipe.train_limit, full)


def training_steps(recipe) -> int:
    """Optimiser steps of the whole run: fit drops the last incomplete batch of every epoch."""
    return recipe.train.epochs * (training_images(recipe) // recipe.train.batch_size)


def image_shape(config) -> tuple[int, int, int]:
    return (config.in_channels, config.image_size, config.image_size)


_STEP_FLOPS: dict[tuple, int] = {}  # counted once per network, objective, tag and batch size in a process


def step_flops(experiment) -> int:
    """FLOPs of one training step of an experiment (vaelab.recipes.Experiment), at its batch size."""
    recipe = experiment.recipe
    objective = experiment.make_objective()
    key = (experiment.model_class, recipe.model, type(objective).__name__, experiment.tag, recipe.train.batch_size)
    if key not in _STEP_FLOPS:
        torch.manual_seed(0)
        model = experiment.model_class(recipe.model)
        _STEP_FLOPS[key] = training_step_flops(model, objective, image_shape(recipe.model), recipe.train.batch_size)
    return _STEP_FLOPS[key]


def experiment_cost(experiment) -> Cost:
    """The training FLOPs of an experiment's whole run."""
    return Cost(training=step_flops(experiment) * training_steps(experiment.recipe))


def parameter_count(experiment) -> int:
    """Trainable parameters of the experiment's model (an adversary's not included)."""
    model = experiment.model_class(experiment.recipe.model)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def evaluation_cost(experiment, *, samples: int = 0, features: str | None = None, feature_images: int = 0,
                    likelihood_images: int = 0, importance_samples: int = 0, encoded_images: int = 0) -> Cost:
    """The FLOPs of evaluating an experiment's model; the arguments are those of vaelab.recipes.Evaluation."""
    recipe = experiment.recipe
    shape = image_shape(recipe.model)
    torch.manual_seed(0)
    model = experiment.model_class(recipe.model)
    flops = sampling_flops(model, samples) if samples else 0
    if feature_images:
        flops += feature_flops(features, shape, feature_images)
    if likelihood_images and importance_samples:
        flops += importance_flops(model, shape, likelihood_images, importance_samples)
    if encoded_images:
        flops += encoding_flops(model, shape, encoded_images)
    return Cost(evaluation=flops)


def chapter_cost(work, keep_in: str | os.PathLike | None = None) -> Cost:
    """Training and evaluation FLOPs of one chapter's work (vaelab.recipes.ChapterWork), every run trained from
    scratch. keep_in: a folder where the count is kept (it takes seconds to tens of seconds on a CPU) under a digest
    of the work, its recipes, torch's version and every vaelab source file: any change to them counts again."""
    from .recipes import experiment

    names = sorted({*work.trains, *(evaluation.experiment for evaluation in work.evaluations)})
    kept = key = None
    if keep_in is not None:
        # one file per work, holding the key it was counted under: a changed vaelab replaces it instead of adding one
        key = hashlib.sha256(repr(([experiment(name).recipe for name in names], torch.__version__,
                                   _source_digest())).encode()).hexdigest()
        kept = Path(keep_in) / f"chapter_cost_{hashlib.sha256(repr(work).encode()).hexdigest()[:16]}.json"
        try:
            counted = json.loads(kept.read_text())
            if counted["key"] == key:
                return Cost(training=int(counted["training"]), evaluation=int(counted["evaluation"]))
        except (OSError, ValueError, KeyError, TypeError):  # not counted yet, or a damaged file: count again
            pass
    cost = Cost()
    for name in work.trains:
        cost += experiment_cost(experiment(name))
    for evaluation in work.evaluations:
        sizes = {k: v for k, v in vars(evaluation).items() if k != "experiment"}
        cost += evaluation_cost(experiment(evaluation.experiment), **sizes)
    if kept is not None:
        try:
            kept.parent.mkdir(parents=True, exist_ok=True)
            partial = kept.with_suffix(f".{os.getpid()}.partial")
            partial.write_text(json.dumps({"key": key, "training": cost.training, "evaluation": cost.evaluation}))
            os.replace(partial, kept)  # atomic: a reader finds the whole count or none
        except OSError:  # a folder it cannot write to: the count is only not kept
            pass
    return cost


def _source_digest() -> str:
    """A digest of every vaelab source file, by path and content."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def format_duration(seconds: float) -> str:
    """'0.4 s', '42 s', '13.5 min', '6.2 h', '3.1 d': the unit a reader compares with a session's length."""
    if seconds < 9.95:
        return f"{seconds:.1f} s" if seconds >= 0.05 else "< 0.1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def format_flops(flops: float) -> str:
    """FLOPs with an SI prefix: '3.01 GFLOP', '18.0 PFLOP'."""
    for prefix, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.3g} {prefix}FLOP"
    return f"{flops:.0f} FLOP"


def table(rows: list[list[str]], header: list[str], right: set[int] = frozenset()) -> str:
    """A plain-text table, columns padded to their widest cell (numbers, by index in `right`, aligned right)."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])

