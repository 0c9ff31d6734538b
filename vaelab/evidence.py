"""The book's one rule for turning measurements into a verdict (derived in chapter 3).

A measurement of an arm (a Fréchet distance, bits per dimension, a count of active latents) varies for two
reasons: the *sample set* it was computed from (which images were generated, which test images were drawn) and
the *training seed* of the model (its initial weights and the order it saw the data in). A claim about a training
outcome ("this objective gives better samples") is a claim about the seed-to-seed distribution, so its noise must
include the seed spread; the sample-set noise alone can be tiny while two seeds of the same arm disagree widely.

The rule, for two arms A and B, each measured on S seeds x R sample sets (an array of shape (S, R), or (S,)):

    per seed:   a_s = mean_r A[s, r]                      (the sample-set noise is averaged into each seed's mean)
    difference: d = mean_s a_s - mean_s b_s
    paired (the same seeds in both arms):   SE = sd_s(a_s - b_s) / sqrt(S),            df = S - 1
    unpaired:   SE = sqrt(var_s(a_s)/S_A + var_s(b_s)/S_B),  df by Welch-Satterthwaite
    decided when |d| > t_{0.975, df} SE, else "cannot tell at this budget".

With many seeds t_{0.975, df} is about 2 ("two standard errors"); with 3 seeds the spread is itself estimated
from 3 numbers and the bar is 4.30 standard errors (paired) so that, as with 2 SE for many seeds, an arm with no
real effect is called better or worse in about 5 % of comparisons. With one seed the seed spread is unknown: a
claim about training outcomes cannot be decided (`about_training=True`, the default), whatever the sample sets
say. A comparison whose only noise is the sample sets (two estimators on one trained model, a model against a
fixed baseline such as bilinear upscaling) passes `about_training=False`, and its SE then comes from the sample
sets of the one seed, paired by sample set where both arms were measured on the same ones.
"""
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CANNOT_TELL = "cannot tell at this budget"


@dataclass(frozen=True)
class Comparison:
    """The difference mean(A) - mean(B), its standard error and what the rule makes of it."""

    difference: float
    se: float
    bar: float  # the multiple of the SE a difference must exceed: t_{0.975, df}
    verdict: str  # "better", "worse" (A against B) or CANNOT_TELL
    seeds: int  # seeds per arm (the smaller arm's)
    sample_sets: int  # sample sets per seed
    covers: str  # what noise the SE covers, in words: "3 seeds x 5 sample sets, paired by seed"

    @property
    def decided(self) -> bool:
        return self.verdict != CANNOT_TELL

    def __str__(self) -> str:
        return f"{self.difference:+.3g} ± {self.se:.2g} ({self.covers}): {self.verdict}"


def _as_seeds_by_sets(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty array of shape (seeds, sample sets) or (seeds,), "
                         f"got shape {np.shape(values)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds a non-finite measurement: {array.tolist()}")
    return array


def _words(seeds: int, sets: int, paired: str, set_noun: str = "sample set") -> str:
    seed_words = "1 seed" if seeds == 1 else f"{seeds:,} seeds"
    set_words = f"1 {set_noun}" if sets == 1 else f"{sets:,} {set_noun}s"
    return f"{seed_words} x {set_words}" + (f", paired by {paired}" if paired else "")


def _standard_error(a: np.ndarray, b: np.ndarray, paired: bool) -> tuple[float, float]:
    """(SE, df) of mean(a) - mean(b) for paired values, or by Welch-Satterthwaite for independent ones."""
    if paired:
        return float(np.std(a - b, ddof=1) / np.sqrt(len(a))), len(a) - 1
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else np.inf
    return float(np.sqrt(va + vb)), df


def compare(a, b, *, lower_is_better: bool = True, paired: bool | None = None,
            about_training: bool = True, set_noun: str = "sample set") -> Comparison:
    """Arm A against arm B by the book's rule (module docstring). `a`, `b`: (seeds, sample sets) or (seeds,).

    paired: whether row s of A and row s of B come from the same seed (and, with one seed, column k from the same
    sample set). None: paired when the shapes agree. set_noun: what one sample set is, for `covers` ("test
    image" when each column is one image's score: "1 seed x 128 test images, paired by test image").
    """
    a, b = _as_seeds_by_sets(a, "a"), _as_seeds_by_sets(b, "b")
    if paired is None:
        paired = a.shape == b.shape
    elif paired and a.shape != b.shape:
        raise ValueError(f"paired arms need the same shape, got {a.shape} and {b.shape}")
    seeds, sets = min(len(a), len(b)), min(a.shape[1], b.shape[1])
    difference = float(a.mean() - b.mean()) if a.shape[1] == b.shape[1] else float(a.mean(1).mean() - b.mean(1).mean())
    if seeds >= 2:  # the seed means carry both noises
        se, df = _standard_error(a.mean(1), b.mean(1), paired)
        how = "seed" if paired else ""
    else:  # one seed: only the sample sets' noise can be estimated
        if sets < 2 and about_training:  # nothing to estimate, and one seed decides no training outcome anyway
            return Comparison(difference, math.nan, math.nan, CANNOT_TELL, seeds, sets, _words(seeds, sets, ""))
        if sets < 2:
            raise ValueError("one seed and one sample set: no noise can be estimated; measure more sample sets")
        se, df = _standard_error(a[0], b[0], paired)
        how = set_noun if paired else ""
    bar = float(stats.t.ppf(0.975, df))
    if seeds < 2 and about_training:
        verdict = CANNOT_TELL  # the seed spread is unknown, and a training outcome varies with the seed
    elif abs(difference) > bar * se:
        verdict = "better" if (difference < 0) == lower_is_better else "worse"
    else:
        verdict = CANNOT_TELL
    return Comparison(difference, se, bar, verdict, seeds, sets, _words(seeds, sets, how, set_noun))


# ---------------------------------------------------------------- what the chapters print and glue

def glue_comparison(name: str, comparison: Comparison, digits: int = 2) -> None:
    """Glue a comparison for a sentence written by hand: {name}_difference and {name}_se (formatted with
    `digits` decimals, the difference signed), {name}_verdict (one of the rule's verdicts), {name}_covers ("3
    seeds x 5 sample sets, paired by seed") and {name}_bar (the multiple of the SE the rule required)."""
    from .chapter import glue  # here, not at the top: the rule itself needs no book tooling

    glue(f"{name}_difference", f"{comparison.difference:+.{digits}f}")
    glue(f"{name}_se", f"{comparison.se:.{digits}f}" if math.isfinite(comparison.se) else "unknown")
    glue(f"{name}_verdict", comparison.verdict)
    glue(f"{name}_covers", comparison.covers)
    glue(f"{name}_bar", f"{comparison.bar:.2f}")


def plus_minus(comparison: Comparison, digits: int = 2) -> str:
    """The difference and its standard error as a table cell: "+1.23 ± 0.45"."""
    return f"{comparison.difference:+.{digits}f} ± {comparison.se:.{digits}f}"


_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def count(n: int, noun: str, plural: str | None = None) -> str:
    """A count as prose writes it: count(1, "epoch") is "one epoch", count(12, "step") "12 steps",
    count(2_000, "image") "2,000 images"."""
    word = _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else f"{n:,}"
    return f"{word} {noun if n == 1 else plural or noun + 's'}"


def listing(items) -> str:
    """Items joined as prose lists them: "a", "a and b", "a, b and c"."""
    items = [str(item) for item in items]
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def ratio(a: float, b: float, digits: int = 1) -> str:
    """a / b as a factor, "3.2 times"; a dash when b is 0."""
    return "–" if b == 0 else f"{a / b:.{digits}f} times"


def markdown_table(header, rows):
    """A Markdown table that Jupyter renders (and myst-nb, in a cell with markdown_format gfm); cells are str()."""
    from IPython.display import Markdown

    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return Markdown("\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]))


VERDICT_HEADER = ("claim", "arms (A vs B)", "seeds x sample sets", "difference A - B ± SE", "verdict")


def verdict_row(claim: str, arms: str, comparison: Comparison, digits: int = 2) -> list[str]:
    """One row of a chapter's verdict table, under VERDICT_HEADER."""
    return [claim, arms, comparison.covers, plus_minus(comparison, digits), f"**{comparison.verdict}**"]
