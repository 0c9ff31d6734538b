"""What every chapter of the book does at its start and at its end, written once:

    chapter = vaelab.chapter.begin(chapter=2)  # the compute mode, the seed, the figure style, and a clock
    ...
    glue("test_mse", mse)              # a number the prose quotes, rendered by Jupyter Book
    chapter.end()                      # glues the run's time and machine and the gpu estimate, for the header

`glue` records every value in `glued`, and also hands it to myst-nb when Jupyter Book's tooling is installed (the
book build): a student who runs a chapter on Colab after `pip install vaelab` needs no book tooling. There, the
chapter's Colab notebook (book/colab/) shows its prose with `show_markdown`, which fills in the values glued so far:

    show_markdown("The test MSE is {{test_mse:.4f}}.")
"""
import re
import time
from ast import literal_eval
from dataclasses import dataclass, field

import numpy as np
import torch

from .runtime import compute_mode, machine, seed_everything
from .viz import use_book_style

try:
    from myst_nb import glue as _myst_glue
except ImportError:  # pip install vaelab: no book tooling, nothing to glue into
    _myst_glue = None


glued: dict[str, object] = {}  # every value glued in this kernel, by name: what show_markdown fills in

# {{name}} or {{name:format_spec}}, the names Python identifiers
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*(?::([^{}]*?))?\s*\}\}")


def glue(name: str, value, display: bool = False) -> None:
    """Record `value` under `name`: in `glued`, and for {glue:text}`name` in the chapter's text (myst-nb).

    A numpy or torch scalar is glued as the Python number it holds: myst-nb formats {glue:text}`name:.2f` from the
    value's plain-text form, and numpy 2 writes its scalars as `np.float64(0.5)`, which is no number to it."""
    if isinstance(value, (np.generic, torch.Tensor)) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    glued[name] = value
    if _myst_glue is not None:
        _myst_glue(name, value, display=display)


def fill(template: str) -> str:
    """`template` with each {{name}} or {{name:format_spec}} replaced by the value glued under that name, written
    as the book writes it: Markdown values (IPython's Markdown) as their Markdown, other values as myst-nb's
    {glue:text} writes them (their plain-text form, read back as a Python literal where it is one, then formatted
    with the spec: `:.2f`, `:,`, `:.1%` ...). A name not glued yet is an error, never a blank."""
    missing = [m[1] for m in PLACEHOLDER.finditer(template) if m[1] not in glued]
    if missing:
        raise LookupError(f"not glued yet: {', '.join(dict.fromkeys(missing))}. The text quotes values that the cells "
                          "above it compute; run those first (in Colab: Runtime > Run before)")
    return PLACEHOLDER.sub(lambda m: _as_text(m[1], glued[m[1]], m[2] or ""), template)


def show_markdown(template: str) -> None:
    """Display `template` as Markdown, its glued values filled in (`fill`)."""
    from IPython.display import Markdown, display

    display(Markdown(fill(template)))


def _as_text(name: str, value, spec: str) -> str:
    if hasattr(value, "_repr_markdown_"):
        markdown = value._repr_markdown_()
        return markdown[0] if isinstance(markdown, tuple) else markdown
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a numpy or torch scalar: its Python number
        value = value.item()
    if not isinstance(value, str):
        from IPython.core.formatters import PlainTextFormatter

        text = PlainTextFormatter()(value)
        try:
            value = literal_eval(text)
        except (SyntaxError, ValueError):
            value = text
    if not spec:
        return str(value)
    kind = spec[-1]
    try:
        if kind in "bcdoxX":
            value = int(value)
        elif kind in "eEfFgGn%":
            value = float(value)
        elif kind == "s":
            value = str(value)
        return format(value, spec)
    except (TypeError, ValueError) as error:
        raise ValueError(f"the value glued as {name!r}, {value!r}, does not take the format {spec!r}") from error


@dataclass
class Chapter:
    mode: str
    number: int | None = None  # the chapter's number in the book: which of vaelab.recipes.CHAPTER_WORK is its
    started: float = field(default_factory=time.perf_counter)

    def end(self) -> None:
        """Glue the chapter's run time, machine, mode and estimated time in the gpu budget (for the page header)."""
        seconds = time.perf_counter() - self.started
        glue("chapter_run_time", f"{seconds / 60:.1f} minutes" if seconds >= 90 else f"{seconds:.0f} seconds")
        glue("chapter_machine", machine())
        glue("chapter_mode", self.mode)
        glue("chapter_gpu_estimate", gpu_estimate(self.number))


def gpu_estimate(chapter: int | None) -> str:
    """How long the chapter takes in the gpu budget on a Colab T4, in words: vaelab.budget's estimate of its
    vaelab.recipes.CHAPTER_WORK["gpu"], which `python -m vaelab recipes` prints too."""
    if chapter is None:
        return "not estimated here (vaelab.chapter.begin was not given the chapter's number)"
    from . import budget, data, recipes  # here, not at the top: the count builds the chapter's networks

    work = recipes.CHAPTER_WORK["gpu"].get(chapter)
    if work is None:
        return "as long as in quick mode: this chapter computes the same in either mode"
    cost = budget.chapter_cost(work, keep_in=data.data_root() / "estimates")  # counted once per version of vaelab
    return f"an estimated {cost.minutes('T4'):.1f} minutes on a Colab T4"


def begin(seed: int = 0, chapter: int | None = None) -> Chapter:
    """Start a chapter: read the compute switch, seed every generator, set the book's figure style. chapter: its
    number in the book, for the estimate of its time in the gpu budget that `Chapter.end` glues."""
    mode = compute_mode()
    seed_everything(seed)
    use_book_style()
    sizes = "a Colab GPU's budget" if mode == "gpu" else "small enough for a CPU"
    print(f"compute mode: {mode} ({sizes}), on {machine()}")
    return Chapter(mode, chapter)
