"""fit(): the training loop, with the compute switch, seeding, history, atomic checkpoints and exact resumption.

    history = fit(model, BalancedGaussianELBO(beta=8), images, TrainConfig(epochs=3, checkpoint="run.pt"))

A checkpoint is written after every epoch. Calling fit again with the same checkpoint continues where it stopped
and produces the same losses as a run that was never interrupted: the data order of epoch e depends only on
(seed, e), and the random state of the reparameterisation noise is saved with the weights.
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


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 100  # the Split-VAE code's batch size
    lr: float = 1e-3  # the paper's Adam learning rate
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


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"images must be a float tensor N x C x H x W, got {getattr(images, 'shape', type(images))}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floats in [0,1], got dtype {images.dtype}")
    low, high = images.min().item(), images.max().item()
    if not (0.0 <= low and high <= 1.0):
        raise ValueError(f"images must lie in [0,1], found values in [{low:.3g}, {high:.3g}]")


def fit(model: nn.Module, objective, images: Tensor, config: TrainConfig = TrainConfig()) -> History:
    """Minimise objective(model, x) over `images` with Adam. Returns the history of every loss term."""
    _check_images(images)
    if len(images) < config.batch_size:
        raise ValueError(f"{len(images)} images are fewer than one batch of {config.batch_size}")
    device = torch.device(config.device) if config.device else pick_device()
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history, start_epoch = History(), 0
    seed_everything(config.seed)

    ckpt = Path(config.checkpoint) if config.checkpoint else None
    if ckpt is not None and ckpt.exists():
        payload = restore(model, ckpt)
        optimizer.load_state_dict(payload["optimizer"])
        objective.load_state_dict(payload["objective"])
        history = History(**payload["history"])
        start_epoch = payload["epoch"]
        torch.set_rng_state(payload["rng"]["torch"])
        if device.type == "cuda" and payload["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])

    steps_per_epoch = len(images) // config.batch_size  # the last incomplete batch is dropped, as in the paper
    for epoch in range(start_epoch, config.epochs):
        model.train()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not config.progress)
        for step in bar:
            x = images[order[step * config.batch_size:(step + 1) * config.batch_size]].to(device, non_blocking=True)
            terms = objective(model, x)
            if not torch.isfinite(terms["loss"]):
                values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
                kept = f"; the last good epoch is kept in {ckpt}" if ckpt is not None and ckpt.exists() else ""
                raise NonFiniteLossError(f"non-finite loss at epoch {epoch + 1}, step {step + 1}: {values}{kept}")
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            objective.update(terms)
            history.record_step({k: float(v.detach()) for k, v in terms.items()})
            bar.set_postfix(loss=f"{terms['loss'].item():.4g}", refresh=False)
        means = history.record_epoch(steps_per_epoch)
        if config.progress:
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}  " + "  ".join(f"{k} {v:.4g}" for k, v in means.items()))
        if ckpt is not None:
            save_checkpoint(ckpt, {
                "format": CHECKPOINT_FORMAT, "epoch": epoch + 1,
                "model_class": type(model).__name__, "model_config": model_config(model),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "objective": objective.state_dict(), "history": history.state_dict(),
                "train_config": asdict(config),
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []},
            })
    model.eval()
    return history
