"""fit(): the one training loop of vaelab, with the compute switch, seeding, history, atomic checkpoints and exact
resumption. Every model of the book trains through it.

    history = fit(model, BalancedGaussianELBO(beta=8), images, TrainConfig(epochs=3, checkpoint="run.pt"))

A checkpoint is written after every epoch. Calling fit again with the same checkpoint continues where it stopped
and produces the same losses as a run that was never interrupted: the data order of epoch e depends only on
(seed, e), and the random state of the reparameterisation noise is saved with the weights.

What the papers need beyond a plain Adam loop is options, not copies of the loop:
- the optimiser and a per-step learning-rate schedule (TrainConfig.optimizer, lr_decay, min_lr);
- data-dependent initialisation: a model with a method `initialize(x)` gets the first batch of a fresh run;
- an adversary: an objective with an attribute `adversary` (an nn.Module, e.g. a PatchGAN discriminator) returns
  an "adversary_loss" term too; fit gives the adversary its own Adam (objective.adversary_lr, adversary_betas)
  and updates both networks on every batch from the same forward pass, each on its own loss.
"""
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .checkpoint import (CHECKPOINT_FORMAT, CheckpointError, check_same_run, exclusive, model_config, restore,
                         run_identity, save_checkpoint)

COMPUTE_MODES = ("quick", "full")


def compute_mode() -> str:
    """The one compute switch. $VAELAB_COMPUTE = quick | full; unset: full on a GPU, quick otherwise.

    quick: small data and short runs that finish in minutes on two CPU cores (what CI runs).
    full: the paper's configurations, meant for a GPU.
    """
    mode = os.environ.get("VAELAB_COMPUTE", "").strip().lower()
    if not mode:
        return "full" if torch.cuda.is_available() else "quick"
    if mode not in COMPUTE_MODES:
        raise ValueError(f"VAELAB_COMPUTE must be one of {COMPUTE_MODES}, got {mode!r}")
    return mode


def pick_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


class NonFiniteLossError(RuntimeError):
    """Training produced NaN or inf. The checkpoint on disk still holds the last good epoch."""


OPTIMIZERS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 100  # the Split-VAE code's batch size
    lr: float = 1e-3  # the Split-VAE paper's Adam learning rate
    optimizer: str = "adam"  # or "adamax" (the self-supervised VAE paper)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_decay: float = 1.0  # per optimiser step: lr_t = max(lr * lr_decay^t, min_lr) (srVAE's lower-bounded decay)
    min_lr: float = 0.0
    seed: int = 0
    checkpoint: str | None = None  # written after every epoch; resumed from when it exists
    device: str | None = None  # None: cuda, then mps, then cpu
    progress: bool = True  # a tqdm bar per epoch and a summary line after each


class History(dict):
    """Loss terms by name: history["loss"] holds one value per optimiser step, history.epochs["loss"] one per epoch."""

    def __init__(self, steps: dict | None = None, epochs: dict | None = None):
        super().__init__(steps or {})
        self.epochs = dict(epochs or {})

    def record_step(self, terms: dict[str, float]) -> None:
        for name, value in terms.items():
            self.setdefault(name, []).append(value)

    def record_epoch(self, steps_in_epoch: int) -> dict[str, float]:
        means = {name: float(np.mean(values[-steps_in_epoch:])) for name, values in self.items()}
        for name, value in means.items():
            self.epochs.setdefault(name, []).append(value)
        return means

    def state_dict(self) -> dict:
        return {"steps": dict(self), "epochs": self.epochs}


def make_optimizer(parameters, config: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser TrainConfig names, and its per-step schedule lr_t = max(lr * lr_decay^t, min_lr)."""
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"TrainConfig.optimizer must be one of {sorted(OPTIMIZERS)}, got {config.optimizer!r}")
    optimizer = OPTIMIZERS[config.optimizer](parameters, lr=config.lr, betas=tuple(config.betas), eps=config.eps)
    floor = config.min_lr / config.lr
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(config.lr_decay**step, floor))
    return optimizer, schedule


def _check_images(images) -> None:
    if not isinstance(images, Tensor):
        hint = " (torch.from_numpy(array) converts a numpy array)" if hasattr(images, "__array__") else ""
        raise ValueError(f"images must be a torch tensor N x C x H x W, got {type(images).__name__}{hint}")
    if images.dim() != 4:
        raise ValueError(f"images must be a float tensor N x C x H x W, got shape {tuple(images.shape)}")
    if images.dtype != torch.float32:
        raise ValueError(f"images must be float32 in [0,1], got dtype {images.dtype} "
                         f"(images.float() / 255 converts 8-bit images, images.float() other floats)")
    if len(images) == 0:
        raise ValueError("images is empty: there is nothing to train on")
    low, high = images.min().item(), images.max().item()
    if not (0.0 <= low and high <= 1.0):
        raise ValueError(f"images must lie in [0,1], found values in [{low:.3g}, {high:.3g}]"
                         + (" (8-bit images? divide by 255)" if high > 1.5 else ""))


def _check_config(config: TrainConfig) -> None:
    if config.epochs < 1:
        raise ValueError(f"TrainConfig.epochs must be at least 1, got {config.epochs}")
    if config.batch_size < 2:
        raise ValueError(f"TrainConfig.batch_size must be at least 2 (batch normalisation needs two images per "
                         f"batch), got {config.batch_size}")
    if config.lr <= 0 or config.min_lr < 0 or not 0 < config.lr_decay <= 1:
        raise ValueError(f"need lr > 0, min_lr >= 0 and 0 < lr_decay <= 1; got lr={config.lr}, "
                         f"min_lr={config.min_lr}, lr_decay={config.lr_decay}")


def _device(config: TrainConfig) -> torch.device:
    if config.device is None:
        return pick_device()
    try:
        device = torch.device(config.device)
    except RuntimeError as error:
        raise ValueError(f"TrainConfig.device={config.device!r} is not a device: {error}") from None
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, True):
        raise ValueError(f"TrainConfig.device={config.device!r}, but this machine has no {device.type.upper()} "
                         f"device; leave device=None to use the best one there is ({pick_device()})")
    return device


def fit(model: nn.Module, objective, images: Tensor, config: TrainConfig = TrainConfig(),
        metadata: dict | None = None) -> History:
    """Minimise objective(model, x) over `images`. Returns the history of every loss term.

    With config.checkpoint set, the run holds a lock on it while it trains (a second process is refused), and an
    existing checkpoint is resumed only if it was written by the same run (see vaelab.checkpoint). `metadata`
    (the recipe, the data set, the code version) is stored in every checkpoint for `vaelab evaluate` to read.
    """
    _check_images(images)
    _check_config(config)
    if len(images) < config.batch_size:
        raise ValueError(f"{len(images)} images are fewer than one batch of {config.batch_size}")
    device = _device(config)
    ckpt = Path(config.checkpoint) if config.checkpoint else None
    with exclusive(ckpt):
        return _fit(model, objective, images, config, device, ckpt, metadata or {})


def _fit(model: nn.Module, objective, images: Tensor, config: TrainConfig, device: torch.device,
         ckpt: Path | None, metadata: dict) -> History:
    model.to(device)
    optimizer, schedule = make_optimizer(model.parameters(), config)
    adversary = getattr(objective, "adversary", None)
    networks = {"model": model}
    if adversary is not None:
        adversary.to(device)
        networks["adversary"] = adversary
        adversary_optimizer = torch.optim.Adam(adversary.parameters(), lr=objective.adversary_lr,
                                               betas=tuple(objective.adversary_betas))
    history, start_epoch = History(), 0
    seed_everything(config.seed)

    def epoch_order(epoch: int) -> Tensor:
        return torch.randperm(len(images), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))

    identity = run_identity(model, objective, images, {k: v for k, v in asdict(config).items()
                                                       if k not in ("epochs", "checkpoint", "device", "progress")})
    if ckpt is not None and ckpt.exists():
        payload = restore(model, ckpt)
        check_same_run(ckpt, payload["run"], identity)
        optimizer.load_state_dict(payload["optimizer"])
        schedule.load_state_dict(payload["schedule"])
        if adversary is not None:
            adversary.load_state_dict(payload["adversary"])
            adversary_optimizer.load_state_dict(payload["adversary_optimizer"])
        objective.load_state_dict(payload["objective"])
        history = History(**payload["history"])
        start_epoch = payload["epoch"]
        torch.set_rng_state(payload["rng"]["torch"])
        if device.type == "cuda" and payload["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
    elif hasattr(model, "initialize"):  # data-dependent initialisation, on a fresh run only
        with torch.no_grad():
            model.initialize(images[epoch_order(0)[:config.batch_size]].to(device))

    steps_per_epoch = len(images) // config.batch_size  # the last incomplete batch is dropped, as in the paper
    for epoch in range(start_epoch, config.epochs):
        for network in networks.values():
            network.train()
        order = epoch_order(epoch)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not config.progress)
        for step in bar:
            x = images[order[step * config.batch_size:(step + 1) * config.batch_size]].to(device, non_blocking=True)
            terms = objective(model, x)
            losses = [name for name in ("loss", "adversary_loss") if name in terms]
            if not all(torch.isfinite(terms[name]) for name in losses):
                values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
                kept = f"; the last good epoch is kept in {ckpt}" if ckpt is not None and ckpt.exists() else ""
                raise NonFiniteLossError(f"non-finite loss at epoch {epoch + 1}, step {step + 1}: {values}{kept}")
            optimizer.zero_grad(set_to_none=True)
            # Each network follows the gradient of its own loss only (the generator's loss also reaches the
            # adversary's weights through D(x_hat), and those gradients must not move the adversary).
            terms["loss"].backward(inputs=list(model.parameters()), retain_graph=adversary is not None)
            if adversary is not None:
                adversary_optimizer.zero_grad(set_to_none=True)
                terms["adversary_loss"].backward(inputs=list(adversary.parameters()))
                adversary_optimizer.step()
            optimizer.step()
            schedule.step()
            objective.update(terms)
            history.record_step({k: float(v.detach()) for k, v in terms.items()})
            bar.set_postfix(loss=f"{terms['loss'].item():.4g}", refresh=False)
        means = history.record_epoch(steps_per_epoch)
        if config.progress:
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}  " + "  ".join(f"{k} {v:.4g}" for k, v in means.items()))
        for name, network in networks.items():  # the last step's update is not checked by any loss yet
            if not all(torch.isfinite(p).all() for p in network.parameters()):
                raise NonFiniteLossError(f"the {name}'s weights became non-finite in epoch {epoch + 1}; "
                                         f"nothing was saved" + (f", {ckpt} keeps the last good epoch" if ckpt else ""))
        if ckpt is not None:
            payload = {
                "format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "run": identity, "metadata": metadata,
                "model_class": type(model).__name__, "model_config": model_config(model),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "objective": objective.state_dict(), "history": history.state_dict(),
                "train_config": asdict(config),
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []},
            }
            if adversary is not None:
                payload["adversary"] = adversary.state_dict()
                payload["adversary_optimizer"] = adversary_optimizer.state_dict()
            save_checkpoint(ckpt, payload)
    for network in networks.values():
        network.eval()
    return history
