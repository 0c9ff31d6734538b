"""fit(): the one training loop of vaelab, with seeding, history, atomic checkpoints and exact resumption
(the compute switch and the device are vaelab.runtime's). Every model of the book trains through it.

    history = fit(model, BalancedGaussianELBO(beta=8), images, TrainConfig(epochs=3, checkpoint="run.pt"))

A checkpoint is written after every epoch; calling fit again with it continues the run with the same losses as a
run never interrupted: the data order of epoch e depends only on (seed, e), and the random state is saved too.

What the papers need beyond a plain Adam loop is options, not copies of the loop:
- the optimiser and a per-step learning-rate schedule (TrainConfig.optimizer, lr_decay, min_lr);
- data-dependent initialisation: a model with a method `initialize(x)` gets the first batch of a fresh run;
- an adversary: an objective with an attribute `adversary` (an nn.Module, e.g. a PatchGAN discriminator) returns
  an "adversary_loss" term too; fit gives the adversary its own Adam (objective.adversary_lr, adversary_betas)
  and updates both networks on every batch from the same forward pass, each on its own loss.
What a GPU needs (precision, channels_last, compile, sync_every) is options too; the README describes them.
"""
import math
import os
import re
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .checkpoint import (CHECKPOINT_FORMAT, check_same_run, exclusive, model_config, restore,
                         run_identity, save_checkpoint)
from .images import check_images
from .runtime import pick_device, seed_everything

# A dry run (VAELAB_DRY_RUN=1) executes every line of a chapter at full image and network size with the amounts of
# work capped here, so that the GPU budget's code path runs on a CPU in seconds per run. The one place the caps live:
# fit, the recipes' data and vaelab.metrics read them through dry_run_cap.
DRY_RUN_LIMITS = {
    "epochs": 2,  # epochs of a run
    "steps": 2,  # optimiser steps per epoch
    "batch_size": 4,  # images per step (batch normalisation needs two)
    "images": 128,  # images a recipe loads per split (chapter 3 halves its test images, then takes 1/25 of a half)
    "samples": 8,  # images generated or measured per set (each costs an Inception pass at 299x299)
    "sample_sets": 2,  # sets per distance: the fewest a spread needs
    "seeds": 2,  # training seeds per variant, where a chapter trains several: the fewest a spread needs
    "importance_samples": 2,  # K of an importance-weighted bound
    "mixture_components": 4,  # of an ex-post mixture (the papers' 20 or 100 would need as many codes)
}


def dry_run() -> bool:
    """Whether $VAELAB_DRY_RUN asks for a dry run (1, true, yes, on)."""
    value = os.environ.get("VAELAB_DRY_RUN", "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"VAELAB_DRY_RUN must be 1 or 0 (or true/false), got {value!r}")


def dry_run_cap(kind: str, n: int) -> int:
    """n, or at most DRY_RUN_LIMITS[kind] in a dry run."""
    return min(n, DRY_RUN_LIMITS[kind]) if dry_run() else n


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
    # How the steps run on the device. precision is part of the run (bf16 changes the numbers); the others only
    # change the speed, so a run may be resumed with other values of them.
    # "fp32"; "bf16" or "fp16": the forward pass and the loss under torch.autocast (weights stay fp32), fp16 with a
    # gradient scaler; "auto": the device's fastest (auto_precision), resolved when the run starts
    precision: str = "fp32"
    channels_last: bool = False  # NHWC memory layout, which tensor-core convolutions prefer
    compile: bool = False  # torch.compile the forward pass and the loss (the first steps then take longer)
    sync_every: int = 50  # steps between the host's reads of the loss terms; each read waits for the device


EXECUTION_ONLY = ("epochs", "checkpoint", "device", "progress", "channels_last", "compile", "sync_every")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def auto_precision(device: torch.device | str) -> str:
    """The precision a run takes on `device` with precision="auto": bf16 autocast on a GPU that supports it
    (Ampere and later), fp16 autocast with a gradient scaler on one that does not (T4, V100), fp32 elsewhere (CPU,
    MPS), where autocast saves little and bf16's rounding would only make runs differ from the CPU's."""
    device = torch.device(device)
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def scaler_for(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """The gradient scaler of a run: scaling the loss keeps fp16's small gradients from flushing to zero; it skips
    a step whose gradients overflowed and lowers the scale. Disabled (a no-op) for every other precision."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


class History(dict):
    """Loss terms by name: history["loss"] holds one value per optimiser step, history.epochs["loss"] one per epoch.
    `resumed` counts the epochs fit found in the checkpoint it resumed (0 for a fresh run)."""

    def __init__(self, steps: dict | None = None, epochs: dict | None = None):
        super().__init__(steps or {})
        self.epochs = dict(epochs or {})
        self.resumed = 0

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


def _check_config(config: TrainConfig) -> None:
    if config.epochs < 1:
        raise ValueError(f"TrainConfig.epochs must be at least 1, got {config.epochs}")
    if config.batch_size < 2:
        raise ValueError(f"TrainConfig.batch_size must be at least 2 (batch normalisation needs two images per "
                         f"batch), got {config.batch_size}")
    if config.precision not in PRECISIONS:
        raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}, got {config.precision!r}")
    if config.sync_every < 1:
        raise ValueError(f"TrainConfig.sync_every must be at least 1, got {config.sync_every}")
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

    With config.checkpoint set, the run holds a lock on it while it trains, and an existing checkpoint is resumed
    only if it was written by the same run (vaelab.checkpoint). `metadata` (the recipe, the data set, the code
    version) is stored in every checkpoint for `vaelab evaluate`. Under torchrun each process takes its 1/N of every
    batch and the gradients are averaged (the README's "The command line"); rank 0 writes checkpoints.
    """
    check_images(images, dtype=torch.float32)
    _check_config(config)
    if dry_run():
        config = replace(config, epochs=dry_run_cap("epochs", config.epochs),
                         batch_size=dry_run_cap("batch_size", config.batch_size))
    if len(images) < config.batch_size:
        raise ValueError(f"{len(images)} images are fewer than one batch of {config.batch_size}")
    rank, world = rank_and_world()
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} does not split evenly over {world} processes")
    device = _device(config)
    if config.precision == "auto":
        config = replace(config, precision=auto_precision(device))
    ckpt = Path(config.checkpoint) if config.checkpoint else None
    with exclusive(ckpt if rank == 0 else None):
        return _fit(model, objective, images, config, device, ckpt, metadata or {})


def rank_and_world() -> tuple[int, int]:
    """(rank, number of processes) of a torchrun launch; (0, 1) otherwise."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _average_gradients(network: nn.Module, world: int) -> None:
    """All-reduce the gradients as one flat tensor. Not DistributedDataParallel: its hooks in forward do not follow
    objectives that call several methods of a model, and an adversary twice, per step."""
    grads = [p.grad for p in network.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def _resident(images: Tensor, device: torch.device) -> Tensor:
    """The whole data set on the GPU when it takes under a quarter of the free memory: no copy per step."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if images.numel() * images.element_size() < free // 4:
            return images.to(device)
    return images


def _fit(model: nn.Module, objective, images: Tensor, config: TrainConfig, device: torch.device,
         ckpt: Path | None, metadata: dict) -> History:
    rank, world = rank_and_world()
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device, memory_format=layout)
    optimizer, schedule = make_optimizer(model.parameters(), config)
    scaler = scaler_for(config.precision, device)  # one scaler for both networks' losses, as torch.amp documents
    adversary = getattr(objective, "adversary", None)
    networks = {"model": model}
    parts = {"optimizer": optimizer, "schedule": schedule, "objective": objective}  # what a checkpoint restores
    if adversary is not None:
        adversary.to(device, memory_format=layout)
        networks["adversary"] = adversary
        adversary_optimizer = torch.optim.Adam(adversary.parameters(), lr=objective.adversary_lr,
                                               betas=tuple(objective.adversary_betas))
        parts |= {"adversary": adversary, "adversary_optimizer": adversary_optimizer}
    history, start_epoch = History(), 0
    seed_everything(config.seed + rank)  # each process its own noise; rank 0 draws what a single process draws

    def epoch_order(epoch: int) -> Tensor:
        return torch.randperm(len(images), generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))

    settings = {k: v for k, v in asdict(config).items() if k not in EXECUTION_ONLY}
    identity = run_identity(model, objective, images, settings | ({"processes": world} if world > 1 else {}))
    if ckpt is not None and ckpt.exists():
        payload = restore(model, ckpt)
        check_same_run(ckpt, payload["run"], identity)
        for name, part in parts.items():
            part.load_state_dict(payload[name])
        if "scaler" in payload:
            scaler.load_state_dict(payload["scaler"])
        history = History(**payload["history"])
        start_epoch = history.resumed = payload["epoch"]
        rng = payload["rng"]["processes"][rank]
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda" and rng["cuda"]:
            torch.cuda.set_rng_state_all(rng["cuda"])
    elif hasattr(model, "initialize"):  # data-dependent initialisation, on a fresh run only (the same in every process)
        with torch.no_grad():
            model.initialize(images[epoch_order(0)[:config.batch_size]].to(device))

    def forward(x: Tensor) -> dict[str, Tensor]:
        with torch.autocast(device.type, dtype=AUTOCAST_DTYPES.get(config.precision, torch.bfloat16),
                            enabled=config.precision in AUTOCAST_DTYPES):
            return objective(model, x)

    if config.compile:
        forward = torch.compile(forward)
    data = _resident(images, device)
    steps_per_epoch = dry_run_cap("steps", len(images) // config.batch_size)  # the last incomplete batch dropped
    for epoch in range(start_epoch, config.epochs):
        for network in networks.values():
            network.train()
        order = epoch_order(epoch).to(data.device)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not config.progress or rank > 0)
        window = []  # the loss terms of the steps since the host last read them, still on the device
        for step in bar:
            batch = order[step * config.batch_size:(step + 1) * config.batch_size].chunk(world)[rank]
            x = data[batch].to(device, non_blocking=True).contiguous(memory_format=layout)
            terms = forward(x)
            optimizer.zero_grad(set_to_none=True)
            # Each network follows the gradient of its own loss only (the generator's loss also reaches the
            # adversary's weights through D(x_hat), and those gradients must not move the adversary).
            scaler.scale(terms["loss"]).backward(inputs=list(model.parameters()), retain_graph=adversary is not None)
            if adversary is not None:
                adversary_optimizer.zero_grad(set_to_none=True)
                scaler.scale(terms["adversary_loss"]).backward(inputs=list(adversary.parameters()))
            for network in networks.values() if world > 1 else ():
                _average_gradients(network, world)
                for buffer in network.buffers():  # batch norm's running statistics: rank 0's, as DDP does
                    torch.distributed.broadcast(buffer, 0)
            if adversary is not None:
                scaler.step(adversary_optimizer)
            scaler.step(optimizer)  # optimizer.step() on unscaled gradients; skipped if they overflowed (fp16)
            scaler.update()
            with warnings.catch_warnings():  # a step fp16's scaler skipped is not a schedule called out of order
                warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"), UserWarning)
                schedule.step()
            values = torch.stack([v.detach().to(device, torch.float32).reshape(()) for v in terms.values()])
            if world > 1:  # every process records, and updates its objective with, the whole batch's means
                torch.distributed.all_reduce(values)
                values /= world
            objective.update(dict(zip(terms, values)))
            window.append(values)
            if len(window) == config.sync_every or step == steps_per_epoch - 1:
                _read_window(window, list(terms), history, epoch, step, ckpt)
                bar.set_postfix(loss=f"{history['loss'][-1]:.4g}", refresh=False)
        means = history.record_epoch(steps_per_epoch)
        if config.progress and rank == 0:
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}  " + "  ".join(f"{k} {v:.4g}" for k, v in means.items()))
        for name, network in networks.items():  # the last step's update is not checked by any loss yet
            if not all(torch.isfinite(p).all() for p in network.parameters()):
                raise NonFiniteLossError(f"the {name}'s weights became non-finite in epoch {epoch + 1}; "
                                         f"nothing was saved" + (f", {ckpt} keeps the last good epoch" if ckpt else ""))
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []}
        processes = [rng] * world
        if world > 1:
            torch.distributed.all_gather_object(processes, rng)
        if ckpt is not None and rank == 0:
            payload = {
                "format": CHECKPOINT_FORMAT, "epoch": epoch + 1, "run": identity, "metadata": metadata,
                "model_class": type(model).__name__, "model_config": model_config(model), "model": model.state_dict(),
                **{name: part.state_dict() for name, part in parts.items()}, "history": history.state_dict(),
                "train_config": asdict(config), "rng": {"processes": processes},
            }
            if scaler.is_enabled():
                payload["scaler"] = scaler.state_dict()
            save_checkpoint(ckpt, payload)
        if world > 1:  # no process goes on (and perhaps resumes from the file) before rank 0 has written it
            torch.distributed.barrier()
    for network in networks.values():
        network.eval()
    return history


def _read_window(window: list[Tensor], names: list[str], history: History, epoch: int, step: int,
                 ckpt: Path | None) -> None:
    """Move the window's loss terms to the host in one transfer, record them, and stop at the first non-finite
    loss. The steps after it have run, but nothing is saved from them: the checkpoint keeps the last good epoch."""
    rows = torch.stack(window).cpu().tolist()
    first = step + 1 - len(rows)
    for offset, row in enumerate(rows):
        terms = dict(zip(names, row))
        if not all(math.isfinite(terms[name]) for name in ("loss", "adversary_loss") if name in terms):
            values = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
            kept = f"; the last good epoch is kept in {ckpt}" if ckpt is not None and ckpt.exists() else ""
            raise NonFiniteLossError(f"non-finite loss at epoch {epoch + 1}, step {first + offset + 1}: {values}{kept}")
        history.record_step(terms)
    window.clear()
