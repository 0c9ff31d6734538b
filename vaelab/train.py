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
import pickle
import random
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

COMPUTE_MODES = ("quick", "full")
CHECKPOINT_FORMAT = "vaelab-checkpoint-1"


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


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt, or belongs to another model."""


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


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact, never a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict:
    """Load with weights_only=True (no arbitrary code runs) and check that it is a vaelab checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a vaelab checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return payload


def model_config(model: nn.Module) -> dict:
    return asdict(model.config) if hasattr(model, "config") else {}


def restore(model: nn.Module, path: str | Path) -> dict:
    """Load a checkpoint's weights into `model` after checking it was saved from the same architecture."""
    payload = load_checkpoint(path)
    if payload["model_class"] != type(model).__name__ or payload["model_config"] != model_config(model):
        raise CheckpointError(
            f"{path} holds a {payload['model_class']} with config {payload['model_config']}, "
            f"not this {type(model).__name__} with config {model_config(model)}"
        )
    model.load_state_dict(payload["model"])
    return payload


def make_optimizer(parameters, config: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser TrainConfig names, and its per-step schedule lr_t = max(lr * lr_decay^t, min_lr)."""
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"TrainConfig.optimizer must be one of {sorted(OPTIMIZERS)}, got {config.optimizer!r}")
    optimizer = OPTIMIZERS[config.optimizer](parameters, lr=config.lr, betas=tuple(config.betas), eps=config.eps)
    floor = config.min_lr / config.lr
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(config.lr_decay**step, floor))
    return optimizer, schedule


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a float tensor N x C x H x W, got {getattr(images, 'shape', type(images))}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floats in [0,1], got dtype {images.dtype}")
    low, high = images.min().item(), images.max().item()
    if not (0.0 <= low and high <= 1.0):
        raise ValueError(f"images must lie in [0,1], found values in [{low:.3g}, {high:.3g}]")


def fit(model: nn.Module, objective, images: Tensor, config: TrainConfig = TrainConfig()) -> History:
    """Minimise objective(model, x) over `images`. Returns the history of every loss term."""
    _check_images(images)
    if len(images) < config.batch_size:
        raise ValueError(f"{len(images)} images are fewer than one batch of {config.batch_size}")
    device = torch.device(config.device) if config.device else pick_device()
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

    ckpt = Path(config.checkpoint) if config.checkpoint else None
    if ckpt is not None and ckpt.exists():
        payload = restore(model, ckpt)
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
                "format": CHECKPOINT_FORMAT, "epoch": epoch + 1,
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
