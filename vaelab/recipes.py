"""Recipes: the data, network and training budget of one experiment, for each compute mode, and the objective it
minimises with that objective's own settings.

Each maker returns a `vaelab.experiment.Recipe`, or a whole `Experiment` where it fixes the model class and objective
too. `RECIPES` names every experiment the chapters and the command line run (`python -m vaelab train <name>`): the
papers' configurations and the book's runs in each of three budgets (vaelab.runtime.compute_mode):

- quick: two CPU cores, each chapter within 3 minutes (what CI runs and what the shipped checkpoints are of);
- gpu: the default on a GPU; each chapter's runs and evaluation sized so that the chapter takes at most 15 minutes
  on a Colab T4 by vaelab.budget's estimate (measured FLOPs over a stated sustained throughput), on the papers' data
  sets and image sizes, with larger networks and ten times quick's steps or more;
- paper: the papers' own runs, hours to days, from the command line only (`python -m vaelab train book-vae-paper`).

Each chapter's gpu budget (CHAPTER_WORK["gpu"]: every run trained from scratch, and its evaluation), estimated by
vaelab.budget at the T4's fp16 rate for training and fp32 for evaluation (`python -m vaelab recipes` prints it;
tests/test_budget.py checks this table against it):

    chapter  runs trained                                    training     evaluation   T4 estimate
    2        book-vae-gpu                                    0.90 PFLOP   0.00 PFLOP    3.8 min
    3        book-vae-gpu, 3 beta-sweep runs                 1.35 PFLOP   1.14 PFLOP   13.2 min
    4        book-{vae,splitvae}-gpu, both with 4L latents   2.11 PFLOP   0.79 PFLOP   14.0 min
    5        book-selfvae-{vae,2level,3level,sketch}-gpu     1.52 PFLOP   0.29 PFLOP    8.3 min
    6        book-howto-{4 variants}-gpu, 3 seeds each       1.39 PFLOP   0.99 PFLOP   12.4 min
    7        book-selfvae-{vae,2level,3level}-gpu            0.95 PFLOP   1.17 PFLOP   11.7 min
"""
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from torch import nn

from . import data
from . import how_to_train_your_vae as how_to_train
from .experiment import Experiment, Recipe, split_vae_loss
from .losses import HowNotToTrainLoss, HowToTrainLoss, SelfSupervisedELBO
from .runtime import BUDGETS, recipe_mode
from .self_supervised_vae import PRESETS as SELF_SUPERVISED_PRESETS
from .self_supervised_vae import SelfSupervisedVAE, SelfSupervisedVAEConfig
from .split_vae import SplitVAE
from .train import TrainConfig
from .vae import PAPER_BETA, PRESETS, VAE


def fashion_vae(mode: str | None = None, **train_overrides) -> Recipe:
    """The book's running example: the Split-VAE paper's network on Fashion-MNIST (its loss: book_vae_loss).

    quick: 10,000 images at 28x28 with the small preset for 300 steps. gpu: the paper's MNIST configuration (32x32,
    L=32, base 64, 4 scales, 512-d embedding; 12.8M parameters, 3.0 GFLOP per image and step), all 60,000 training
    images for 5 epochs (3,000 steps): 0.90 PFLOP, 3.8 minutes on a T4. paper: the same for the paper's 250 epochs
    (45 PFLOP).
    """
    mode = recipe_mode(mode)
    if mode == "quick":
        recipe = Recipe("fashion_vae_quick", "fashion-mnist", PRESETS["quick"],
                        TrainConfig(epochs=3, batch_size=100, lr=1e-3), train_limit=10_000)
    else:
        recipe = Recipe(f"fashion_vae_{mode}", "fashion-mnist", PRESETS["mnist"],
                        TrainConfig(epochs=BOOK_VAE_EPOCHS[mode], batch_size=100, lr=1e-3, precision="auto"),
                        pad_to_32=True)
    return recipe.with_train(**train_overrides)


def book_vae_loss(mode: str | None = None, beta: float = PAPER_BETA["mnist"]) -> Callable[[Recipe], object]:
    """The Split-VAE paper's loss as the book's running example minimises it: its MNIST beta of 8, and gamma's
    running MSE decaying with the paper's 0.99, but 0.95 in quick mode: with a time constant of 100 steps gamma would
    still lag the MSE by a factor of 2 at the end of 300 steps (measured), keeping the effective KL weight beta*gamma,
    and so the collapse of latent variables, far higher than the paper's long runs see."""
    return split_vae_loss(beta, gamma_decay=0.95 if recipe_mode(mode) == "quick" else 0.99)


BOOK_VAE_EPOCHS = {"gpu": 5, "paper": 250}


def split_vae_paper(dataset: str, model_class: type[nn.Module] = SplitVAE) -> Experiment:
    """The Split-VAE paper's run on MNIST, CIFAR-10 or CelebA (its Sec. 4): its network, beta and epochs,
    Adam 1e-3, batches of 100, the whole training split."""
    prefix = "splitvae" if model_class is SplitVAE else "vae"
    recipe = Recipe(f"{prefix}_{dataset}", dataset, PRESETS[dataset],
                    TrainConfig(epochs=PAPER_EPOCHS[dataset], batch_size=100, lr=1e-3), pad_to_32=dataset == "mnist")
    return Experiment(recipe, model_class, split_vae_loss(PAPER_BETA[dataset]))


PAPER_EPOCHS = {"mnist": 250, "cifar10": 110, "celeba": 160}  # the Split-VAE paper's epochs


# The self-supervised VAE's optimiser (srVAE's code): AdaMax, its rate multiplied by 0.999999 a step down to 1e-4.
SELF_SUPERVISED_TRAIN = dict(batch_size=32, lr=2e-3, optimizer="adamax", betas=(0.9, 0.999), eps=1e-7,
                             lr_decay=0.999999, min_lr=1e-4)
SELF_SUPERVISED_VARIANTS = ("vae", "2level", "3level", "sketch")


def self_supervised(variant: str, mode: str | None = None, **train_overrides) -> Recipe:
    """Chapter 5's runs: "vae" (no transform), "2level" (one downscale), "3level" (two), "sketch".

    quick: Fashion-MNIST 28 -> 14 -> 7 with the small networks of the quick presets, 4,800 training images seen
    once (150 steps), the same for every variant, so that their bounds compare at equal budget; the learning rate
    starts at 5e-3, not 2e-3, which gave every variant a better bound in runs this short (measured: at 200 steps,
    -0.10 bpd for the VAE and -0.19 for the 2-level model). gpu: CIFAR-10 32 -> 16 (-> 8), srVAE's topology at half
    its growth rates with the RealNVP prior, the paper's optimiser, 30,000 training images seen once (937 steps,
    six times quick's, on images with 3.7 times the dimensions): 5.5 (vae), 12.2 (2level), 14.0 (3level) and
    18.9 (sketch) GFLOP per image and step, 1.52 PFLOP for the four, 6.3 minutes on a T4. paper: the same networks
    for 30 epochs of the whole training split (76 PFLOP for the four; srVAE's full size is selfvae-*-cifar10).
    """
    if variant not in SELF_SUPERVISED_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; the variants are {SELF_SUPERVISED_VARIANTS}")
    mode = recipe_mode(mode)
    if mode == "quick":
        recipe = Recipe(f"selfvae_{variant}_quick", "fashion-mnist", SELF_SUPERVISED_PRESETS[f"quick_{variant}"],
                        TrainConfig(epochs=1, **{**SELF_SUPERVISED_TRAIN, "lr": 5e-3}), train_limit=4_800)
    else:
        recipe = Recipe(f"selfvae_{variant}_{mode}", "cifar10", SELF_SUPERVISED_PRESETS[f"cifar10_{variant}"],
                        TrainConfig(epochs=1 if mode == "gpu" else 30, precision="auto", **SELF_SUPERVISED_TRAIN),
                        train_limit=30_000 if mode == "gpu" else None)
    return recipe.with_train(**train_overrides)


def self_supervised_paper(variant: str) -> Experiment:
    """The self-supervised VAE paper's CIFAR-10 runs at srVAE's full size (Sec. 4 and srVAE's code): the two-level model
    ("2level") or the VAE with the RealNVP prior ("vae"), with srVAE's budget as its code runs it (the paper gives
    none): epochs 1 to 1,999 of its range(1, 2000) loop, on the 42,500 training images it keeps after setting 15 %
    aside, in batches of 32: about 2.65M steps, after which the learning rate, multiplied by 0.999999 per step, is
    near 1.4e-4, never reaching its floor of 1e-4."""
    config = SelfSupervisedVAEConfig(transforms=("downscale",))  # the defaults are srVAE's CIFAR-10 networks
    if variant == "vae":
        config = replace(config, transforms=(), top_encoder=(16, 8), top_decoder=(128, 6))  # srVAE's densenet32
    recipe = Recipe(f"selfvae_{variant}_cifar10", "cifar10", config,
                    TrainConfig(epochs=1999, **SELF_SUPERVISED_TRAIN), train_limit=42_500)
    return Experiment(recipe, SelfSupervisedVAE, lambda _: SelfSupervisedELBO())


def rivera_vae(mode: str | None = None, **train_overrides) -> Recipe:
    """Rivera's residual VAE (chapter 6), trained as the original: Adam with beta_1 = 0.5 and Keras' epsilon 1e-7.

    quick: Fashion-MNIST padded to 32x32, the `quick` preset, 5,000 images seen once in batches of 25 (200 steps)
    at 1e-3, so that the chapter's four runs train in 70 to 90 s on two CPU cores (measured). gpu: CelebA 64x64
    with the Split-VAE crop, the `celeba64` preset at half its width (32 filters; 0.79M parameters, 2.3 GFLOP
    per image and step on average over the variants), 50,000 images seen once in batches of 64 (781 steps) at
    1e-3: 1.39 PFLOP for the chapter's four variants times three seeds, 5.8 minutes on a T4. paper: the
    `celeba64` preset (64 filters), the whole training split for 10 epochs at the original's 1e-4 (the original:
    CelebA-HQ 256x256, 300-400 epochs). Its objectives: HOW_TO_TRAIN_VARIANTS.
    """
    mode, adam = recipe_mode(mode), dict(betas=(0.5, 0.999), eps=1e-7)
    if mode == "quick":
        recipe = Recipe("how_to_train_quick", "fashion-mnist", how_to_train.PRESETS["quick"],
                        TrainConfig(epochs=1, batch_size=25, lr=1e-3, **adam), train_limit=5_000, pad_to_32=True)
    elif mode == "gpu":
        recipe = Recipe("how_to_train_gpu", "celeba", replace(how_to_train.PRESETS["celeba64"], filters=32),
                        TrainConfig(epochs=1, batch_size=64, lr=1e-3, precision="auto", **adam), train_limit=50_000)
    else:
        recipe = Recipe("how_to_train_paper", "celeba", how_to_train.PRESETS["celeba64"],
                        TrainConfig(epochs=10, batch_size=64, lr=1e-4, precision="auto", **adam))
    return recipe.with_train(**train_overrides)


# Chapter 6's ablation, each an objective for a recipe: the original's baseline, then its loss built up term by term.
# The KL weights are the original's: 1 in both of its losses.
HOW_TO_TRAIN_VARIANTS: dict[str, Callable[[Recipe], object]] = {
    "standard-kl": lambda recipe: HowNotToTrainLoss(kl_weight=1.0),
    "global-kl": lambda recipe: HowToTrainLoss(global_weight=1.0, variance_weight=0.0),
    "regularised": lambda recipe: HowToTrainLoss(global_weight=1.0),
    "patchgan": lambda recipe: HowToTrainLoss(how_to_train.patchgan(recipe.model, seed=recipe.train.seed),
                                              global_weight=1.0, adversary_lr=recipe.train.lr,
                                              adversary_betas=recipe.train.betas),
}


def _named(prefix: str, make: Callable[..., Experiment], variants=None) -> dict[str, Callable[[], Experiment]]:
    """`make(budget)` named `<prefix>-<budget>` for each budget (book-vae-quick, ...); with `variants`,
    `make(variant, budget)` named `<prefix>-<variant>-<budget>` (book-selfvae-2level-quick, ...)."""
    if variants is None:
        return {f"{prefix}-{budget}": (lambda budget=budget: make(budget)) for budget in BUDGETS}
    return {f"{prefix}-{v}-{budget}": (lambda v=v, budget=budget: make(v, budget))
            for v in variants for budget in BUDGETS}


RECIPES: dict[str, Callable[[], Experiment]] = {
    **_named("book-vae", lambda m: Experiment(fashion_vae(m), VAE, book_vae_loss(m))),
    **_named("book-splitvae", lambda m: Experiment(fashion_vae(m), SplitVAE, book_vae_loss(m))),
    **{f"splitvae-{d}": (lambda d=d: split_vae_paper(d)) for d in PAPER_EPOCHS},
    **{f"vae-{d}": (lambda d=d: split_vae_paper(d, VAE)) for d in PAPER_EPOCHS},
    **_named("book-selfvae", lambda v, m: Experiment(self_supervised(v, m), SelfSupervisedVAE,
                                                     lambda _: SelfSupervisedELBO()), SELF_SUPERVISED_VARIANTS),
    **{f"selfvae-{v}-cifar10": (lambda v=v: self_supervised_paper(v)) for v in ("2level", "vae")},
    **_named("book-howto", lambda v, m: Experiment(rivera_vae(m), how_to_train.HowToTrainYourVAE,
                                                   HOW_TO_TRAIN_VARIANTS[v], tag=f"_{v}"), HOW_TO_TRAIN_VARIANTS),
}

# The book's runs were called "-full" before the gpu and paper budgets split them: the old names still resolve, to
# the gpu budget's runs, but are not listed.
RECIPE_ALIASES = {name.removesuffix("-gpu") + "-full": name for name in RECIPES if name.endswith("-gpu")}
RECIPES |= {alias: RECIPES[name] for alias, name in RECIPE_ALIASES.items()}


@dataclass(frozen=True)
class Evaluation:
    """One measurement a chapter makes of a run's model: `samples` images decoded (from the prior, from a mixture or
    from the codes of real images), the Fréchet `features` of `feature_images` images (generated and reference
    together), `importance_samples` importance samples on each of `likelihood_images` test images, and the codes of
    `encoded_images` images (reconstructions, latent statistics, a mixture's fit)."""

    experiment: str  # a name in RECIPES
    samples: int = 0
    features: str = "inception"
    feature_images: int = 0
    likelihood_images: int = 0
    importance_samples: int = 0
    encoded_images: int = 0


@dataclass(frozen=True)
class ChapterWork:
    """What a chapter computes in a budget: the runs it trains (each from scratch), its measurements, and the sizes
    its cells read (`sizes`), from which the measurements are counted. vaelab.budget turns the gpu budget's into
    FLOPs and an estimated time per GPU class; each chapter's GPU path takes its sizes from here."""

    trains: tuple[str, ...]
    evaluations: tuple[Evaluation, ...] = ()
    sizes: dict = field(default_factory=dict)


def beta_sweep(beta: float, mode: str | None = None, **train_overrides) -> Experiment:
    """Chapter 3's sweep over beta: chapter 2's network and loss with another beta, on fewer images for fewer
    steps. quick: 3,000 images for 2 epochs. gpu: 10,000 images for 5 epochs."""
    mode = recipe_mode(mode)
    if mode == "paper":
        raise ValueError("chapter 3's beta sweep has quick and gpu budgets only")
    images, epochs = (3_000, 2) if mode == "quick" else (10_000, 5)
    recipe = fashion_vae(mode, epochs=epochs, **train_overrides)
    return Experiment(replace(recipe, name=f"{recipe.name}_beta_sweep", train_limit=images), VAE,
                      book_vae_loss(mode, beta))


_SELFVAE_GPU = tuple(f"book-selfvae-{v}-gpu" for v in SELF_SUPERVISED_VARIANTS)
_HOWTO_GPU = tuple(f"book-howto-{v}-gpu" for v in HOW_TO_TRAIN_VARIANTS)
HOW_TO_TRAIN_GPU_SEEDS = 3

# What each chapter's GPU path computes, by the names its cells read (a dry run caps each with
# vaelab.train.dry_run_cap). CHAPTER_WORK below counts the chapters' measurements from these.
GPU_SIZES: dict[int, dict] = {
    # test images encoded and decoded for the reconstructions, traversals and latent statistics
    2: dict(images=2_000),
    # images per Fréchet distance, sample sets (classifier features; the FID on the first), the bounds' images and K
    3: dict(samples=10_000, sample_sets=5, likelihood_images=500, importance_samples=(1, 8, 64, 512)),
    # images per Fréchet distance, sample sets; the training images and epochs of the runs with 4 L latents
    4: dict(samples=2_500, sample_sets=2, small_images=10_000, small_epochs=5),
    # the likelihood bounds' test images and importance samples
    5: dict(likelihood_images=500, importance_samples=32),
    # images per FID (test images, prior and mixture samples), sample sets per run, training seeds per variant
    6: dict(samples=2_500, sample_sets=2, seeds=HOW_TO_TRAIN_GPU_SEEDS),
    # the protocol's samples and sets per distance, its bounds' test images and importance samples
    7: dict(samples=5_000, sample_sets=3, likelihood_images=500, importance_samples=16),
}


SWEEP_BETAS = (1.0, 8.0, 32.0)  # chapter 3's betas: chapter 2's 8 between a weaker and a stronger pull


def more_latents(model_class: type[nn.Module] = VAE, mode: str | None = None) -> Experiment:
    """Chapter 4's runs with four times the latent variables: chapter 2's network and loss with 4 L latents, on fewer
    images (the gpu budget's: GPU_SIZES[4]; quick: 2,000 images once in batches of 50)."""
    mode = recipe_mode(mode)
    images, epochs, batch = ((2_000, 1, 50) if mode == "quick" else
                             (GPU_SIZES[4]["small_images"], GPU_SIZES[4]["small_epochs"], 100))
    recipe = fashion_vae(mode, epochs=epochs, batch_size=batch)
    recipe = replace(recipe, name=f"{recipe.name}_latents_x4", train_limit=images,
                     model=replace(recipe.model, latent_dim=4 * recipe.model.latent_dim))
    return Experiment(recipe, model_class, book_vae_loss(mode))


RECIPES_FOR_BUDGET = {**{f"book-vae-gpu-beta-{b:g}": (lambda b=b: beta_sweep(b, "gpu"))
                         for b in SWEEP_BETAS},
                      "book-vae-gpu-latents-x4": lambda: more_latents(VAE, "gpu"),
                      "book-splitvae-gpu-latents-x4": lambda: more_latents(SplitVAE, "gpu")}
"""Runs a chapter trains beyond RECIPES (chapter 3's sweep, chapter 4's runs with more latents), named for
vaelab.budget; not on the command line."""

def _chapter_2(sizes: dict) -> ChapterWork:
    n = sizes["images"]
    # n test images encoded and decoded; 20 prior samples and 5 traversals of 9 images for the figures
    return ChapterWork(("book-vae-gpu",), (Evaluation("book-vae-gpu", samples=n + 20 + 5 * 9, encoded_images=n),),
                       sizes)


def _chapter_3(sizes: dict) -> ChapterWork:
    n, sets, vae = sizes["samples"], sizes["sample_sets"], "book-vae-gpu"
    train, test = data.SPLIT_SIZES["fashion-mnist"]["train"], data.SPLIT_SIZES["fashion-mnist"]["test"]
    half = test // 2
    return ChapterWork((vae, *(f"book-vae-gpu-beta-{b:g}" for b in SWEEP_BETAS)), (
        # every sample set: prior and mixture samples and reconstructions of training images, n each; classifier
        # features of those and of as many real training images, of the test images (the bias, the reference) and
        # of the resized half of them; the codes of the training images (the mixture, the scatter) and of the test
        # images (the latent statistics of the model and of the sweep's three)
        Evaluation(vae, samples=3 * sets * n, features="classifier", feature_images=4 * sets * n + 2 * test + 3 * half,
                   encoded_images=sets * n + 2 * train + 4 * test),
        # the FID of the first set of each of the four against the test images; the resizing's three halves
        Evaluation(vae, feature_images=4 * n + test + 3 * half),
        Evaluation(vae, likelihood_images=sizes["likelihood_images"], importance_samples=sum(sizes["importance_samples"])),
    ), sizes)


def _chapter_4(sizes: dict) -> ChapterWork:
    n, sets = sizes["samples"], sizes["sample_sets"]
    train, test = data.SPLIT_SIZES["fashion-mnist"]["train"], data.SPLIT_SIZES["fashion-mnist"]["test"]
    vae, split, more = "book-vae-gpu", "book-splitvae-gpu", ("book-vae-gpu-latents-x4", "book-splitvae-gpu-latents-x4")
    return ChapterWork((vae, split, *more), (
        # each model: a mixture fitted to the codes of the training images, and per sample set n prior and n mixture
        # samples; their FIDs (the plain VAE's x; the Split-VAE's x, x1, x2 and their random mix); the inactive
        # latents on `sets` blocks of n test images; the Split-VAE's split described on 1,000 test images
        Evaluation(vae, samples=2 * sets * n, feature_images=2 * sets * n, encoded_images=train + sets * n),
        Evaluation(split, samples=2 * sets * n + 1_000, feature_images=8 * sets * n,
                   encoded_images=train + sets * n + 1_000),
        # the floor (sets of n training images) and the reference (the 10,000 test images)
        Evaluation(vae, feature_images=sets * n + test),
        *(Evaluation(name, encoded_images=sets * n) for name in more),
    ), sizes)


def _chapter_5(sizes: dict) -> ChapterWork:
    bounds = dict(likelihood_images=sizes["likelihood_images"], importance_samples=sizes["importance_samples"])
    # every variant: the bounds on the same test images, one pass of inference per image for the tables, and about
    # 1,000 images generated or transmitted for the figures and the modes
    return ChapterWork(_SELFVAE_GPU, tuple(Evaluation(name, samples=1_000 + sizes["likelihood_images"], **bounds)
                                           for name in _SELFVAE_GPU), sizes)


def _chapter_6(sizes: dict) -> ChapterWork:
    n, sets, seeds = sizes["samples"], sizes["sample_sets"], sizes["seeds"]
    with_prior, with_mixture = _HOWTO_GPU[:1] + _HOWTO_GPU[2:], _HOWTO_GPU[2:]  # runs a, c, d and c, d
    return ChapterWork(tuple(name for name in _HOWTO_GPU for _ in range(seeds)), (
        # the test images' features (the reference) and as many training images' (data to data), once
        Evaluation(_HOWTO_GPU[0], feature_images=2 * n),
        # every run and seed: n test images encoded twice (statistics, codes) and reconstructed
        *(Evaluation(name, samples=n, encoded_images=2 * n) for name in _HOWTO_GPU for _ in range(seeds)),
        # runs a, c and d: the FID of `sets` sets of n prior samples each
        *(Evaluation(name, samples=sets * n, feature_images=sets * n) for name in with_prior for _ in range(seeds)),
        # runs c and d: a mixture fitted to 2n training codes, the FID of `sets` sets of n of its samples
        *(Evaluation(name, samples=sets * n, feature_images=sets * n, encoded_images=2 * n)
          for name in with_mixture for _ in range(seeds)),
        # the figures: one set of prior samples of each run, run c's mixture refitted and n samples of it; the
        # gradient probes, 250 test images at 4 scales of sigma for each run, forward and backward (about 3 passes)
        *(Evaluation(name, samples=n + 3 * 4 * 250, encoded_images=3 * 4 * 250) for name in _HOWTO_GPU),
        Evaluation(_HOWTO_GPU[2], samples=n, encoded_images=2 * n),
        # run d's discriminator judged on 500 held-out test images and their reconstructions, every seed
        Evaluation(_HOWTO_GPU[3], samples=500 * seeds, encoded_images=500 * seeds),
    ), sizes)


def _chapter_7(sizes: dict) -> ChapterWork:
    n, sets = sizes["samples"], sizes["sample_sets"]
    core = _SELFVAE_GPU[:3]
    bounds = dict(likelihood_images=sizes["likelihood_images"], importance_samples=sizes["importance_samples"])
    return ChapterWork(core, (
        # the protocol (metrics.evaluate): the FID of n prior samples against n test images, each model's own
        # reference, and the bounds; then `sets` - 1 more sets, and the bounds again, image by image
        *(Evaluation(name, samples=sets * n, feature_images=(sets + 1) * n, **bounds) for name in core),
        *(Evaluation(name, **bounds) for name in core),
        # the test images' reference of the sample sets, and the floor: n training against n test images
        Evaluation(core[0], feature_images=3 * n),
    ), sizes)


CHAPTER_WORK: dict[str, dict[int, ChapterWork]] = {"gpu": {
    2: _chapter_2(GPU_SIZES[2]), 3: _chapter_3(GPU_SIZES[3]), 4: _chapter_4(GPU_SIZES[4]),
    5: _chapter_5(GPU_SIZES[5]), 6: _chapter_6(GPU_SIZES[6]),
    # the results table in a fresh session: chapter 5's three core models trained, each measured by the protocol
    # (chapters 4 and 6's models are measured too when their chapters have trained them in the same session)
    7: _chapter_7(GPU_SIZES[7]),
}}


def experiment(name: str) -> Experiment:
    """The experiment a name in RECIPES (or RECIPES_FOR_BUDGET) makes."""
    return (RECIPES | RECIPES_FOR_BUDGET)[name]()
