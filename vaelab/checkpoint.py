"""Checkpoints: written atomically, read without running code, checked against the run that resumes them, and
owned by one training process at a time.

A checkpoint holds everything a run needs to continue exactly (weights, optimiser and schedule, the objective's
state, the history, random states) and the run's identity: what defines it besides the number of epochs. Resuming
with another identity (another beta, learning rate, objective or data set) is refused, because the result would
be neither the old run nor the new one.
"""
import hashlib
import os
import pickle
import socket
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor, nn

try:
    import fcntl  # POSIX; Windows runs without the lock
except ImportError:
    fcntl = None

CHECKPOINT_FORMAT = "vaelab-checkpoint-3"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt, belongs to another run, or is in use by another process."""


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact, never a truncated file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, expected_format: str = CHECKPOINT_FORMAT) -> dict:
    """Load with weights_only=True (no arbitrary code runs) and check that it is a vaelab checkpoint (of the
    training loop's format, or another, e.g. a shipped checkpoint's)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?): {err}. "
                              f"Delete it to start the run afresh.") from err
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        raise CheckpointError(f"{path} is not a vaelab checkpoint of this version (expected format "
                              f"{expected_format!r}); delete it, or pass another checkpoint path, to start afresh")
    return payload


def model_config(model: nn.Module) -> dict:
    return asdict(model.config) if hasattr(model, "config") else {}


def restore(model: nn.Module, path: str | Path) -> dict:
    """Load a checkpoint's weights into `model` after checking it was saved from the same architecture."""
    payload = load_checkpoint(path)
    if payload["model_class"] != type(model).__name__ or payload["model_config"] != model_config(model):
        raise CheckpointError(f"{path} holds a {payload['model_class']} with config {payload['model_config']}, "
                              f"not this {type(model).__name__} with config {model_config(model)}")
    model.load_state_dict(payload["model"])
    return payload


def data_fingerprint(images: Tensor) -> str:
    """Shape, dtype and a hash of every value: two data sets share a fingerprint only if they are identical."""
    digest = hashlib.blake2b(images.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy(), digest_size=12)
    return f"{tuple(images.shape)} {images.dtype} {digest.hexdigest()}"


def run_identity(model: nn.Module, objective, images: Tensor, train_settings: dict) -> dict:
    """What a resumed run must share with the run it continues: everything but the number of epochs."""
    return {"model": f"{type(model).__name__} {model_config(model)}",
            "objective": f"{type(objective).__name__} {objective.settings() if hasattr(objective, 'settings') else ''}",
            **{f"train.{k}": v for k, v in train_settings.items()},
            "data": data_fingerprint(images)}


def check_same_run(path: Path, saved: dict, current: dict) -> None:
    differences = [f"  {key}: {saved.get(key)!r} in the checkpoint, {current.get(key)!r} now"
                   for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)]
    if differences:
        raise CheckpointError(
            f"{path} belongs to another run; resuming it would mix two runs:\n" + "\n".join(differences) +
            "\nTo continue that run, call fit with its settings (only epochs may change); to start afresh, delete "
            "the file or pass another checkpoint path.")


@contextmanager
def exclusive(path: Path | None):
    """Hold `<checkpoint>.lock` while training, so that a second process training the same run is refused instead
    of overwriting (or later continuing) the first one's checkpoints; the OS drops the lock however the process ends."""
    if path is None or fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise CheckpointError(f"{path} is being trained by another process ({lock.read().strip() or 'unknown'});"
                                  f" wait for it to finish, or give this run another checkpoint path") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}")
        lock.flush()
        for orphan in path.parent.glob(f"{path.name}.*.tmp"):  # left by a writer that was killed mid-write
            orphan.unlink(missing_ok=True)
        try:
            yield
        finally:
            lock.truncate(0)
            fcntl.flock(lock, fcntl.LOCK_UN)
