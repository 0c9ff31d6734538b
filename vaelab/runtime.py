"""Where and how vaelab runs, read once: the compute switch, the device, the seed and the machine in words.

    mode = compute_mode()       # $VAELAB_COMPUTE: quick or gpu (a chapter's), or the best this machine allows
    device = pick_device()      # cuda, mps or cpu
    seed_everything(0)          # Python's, numpy's and torch's generators
    machine()                   # "one Tesla T4 GPU", "2 CPU cores, no GPU"

This module imports only torch and numpy, so that `import vaelab` and the command line start without the book's
figure and widget libraries (vaelab.viz), which only a chapter needs.
"""
import os
import random
import warnings

import numpy as np
import torch

COMPUTE_MODES = ("quick", "gpu")  # what a chapter runs in; "paper" is the command line's (vaelab.recipes)
BUDGETS = ("quick", "gpu", "paper")  # what a recipe can be sized for
MODE_ALIASES = {"full": "gpu"}  # the gpu budget's name before the paper budget was split off


def _resolve_alias(mode: str, where: str) -> str:
    if mode in MODE_ALIASES:
        warnings.warn(f"{where} {mode!r} is now called {MODE_ALIASES[mode]!r} (sized for a Colab T4 in 15 minutes "
                      f"per chapter); the papers' own runs are the 'paper' recipes, from the command line",
                      FutureWarning, stacklevel=3)
        return MODE_ALIASES[mode]
    return mode


def compute_mode() -> str:
    """The one compute switch. $VAELAB_COMPUTE = quick | gpu ("full", gpu's old name, with a warning); unset: gpu
    on a GPU, quick otherwise. vaelab.recipes describes the budgets; "paper" is the command line's only."""
    mode = os.environ.get("VAELAB_COMPUTE", "").strip().lower()
    if not mode:
        return "gpu" if torch.cuda.is_available() else "quick"
    mode = _resolve_alias(mode, "VAELAB_COMPUTE=")
    if mode == "paper":
        raise ValueError("VAELAB_COMPUTE=paper: the papers' own runs take hours to days and are not run by a chapter; "
                         "train them from the command line (python -m vaelab recipes lists them with their "
                         "estimated times, python -m vaelab train NAME trains one) and use quick or gpu here")
    if mode not in COMPUTE_MODES:
        raise ValueError(f"VAELAB_COMPUTE must be one of {COMPUTE_MODES}, got {mode!r}")
    return mode


def recipe_mode(mode: str | None) -> str:
    """The budget a recipe is sized for: `mode` (quick, gpu or paper; "full" means gpu), or compute_mode()."""
    if mode is None:
        return compute_mode()
    mode = _resolve_alias(mode, "mode")
    if mode not in BUDGETS:
        raise ValueError(f"the budgets are {BUDGETS}, got {mode!r}")
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


def machine() -> str:
    """The hardware this process runs on, in words (a chapter's header, a shipped run's provenance): the GPU's
    name, or the CPU cores torch uses."""
    if torch.cuda.is_available():
        return f"one {torch.cuda.get_device_name()} GPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} CPU cores, no GPU"
