"""What every chapter of the book does at its start and at its end, written once:

    chapter = vaelab.chapter.begin()   # the compute mode, the seed, the figure style, and a clock
    ...
    glue("test_mse", mse)              # a number the prose quotes, rendered by Jupyter Book
    chapter.end()                      # glues this run's time and machine for the page's header

`glue` is myst-nb's when Jupyter Book's tooling is installed (the book build) and does nothing otherwise: a
student who runs a chapter on Colab after `pip install vaelab` needs no book tooling.
"""
import os
import time
from dataclasses import dataclass, field

import torch

from .train import compute_mode, seed_everything
from .viz import use_book_style

try:
    from myst_nb import glue as _myst_glue
except ImportError:  # pip install vaelab: no book tooling, nothing to glue into
    _myst_glue = None


def glue(name: str, value, display: bool = False) -> None:
    """Record `value` under `name` for {glue:text}`name` in the chapter's text (myst-nb), or do nothing."""
    if _myst_glue is not None:
        _myst_glue(name, value, display=display)


def machine() -> str:
    """The hardware a chapter ran on, in words: the GPU's name, or the CPU cores torch uses."""
    if torch.cuda.is_available():
        return f"one {torch.cuda.get_device_name()} GPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} CPU cores, no GPU"


@dataclass
class Chapter:
    mode: str
    started: float = field(default_factory=time.perf_counter)

    def end(self) -> None:
        """Glue the run time of the chapter and the machine it ran on (the page header quotes both)."""
        seconds = time.perf_counter() - self.started
        glue("chapter_run_time", f"{seconds / 60:.1f} minutes" if seconds >= 90 else f"{seconds:.0f} seconds")
        glue("chapter_machine", machine())
        glue("chapter_mode", self.mode)


def begin(seed: int = 0) -> Chapter:
    """Start a chapter: read the compute switch, seed every generator, set the book's figure style."""
    mode = compute_mode()
    seed_everything(seed)
    use_book_style()
    sizes = "the papers' sizes, for a GPU" if mode == "full" else "small enough for a CPU"
    print(f"compute mode: {mode} ({sizes}), on {machine()}")
    return Chapter(mode)
