"""The verdict rule of vaelab.evidence on synthetic arms whose answer is known."""
import math

import numpy as np
import pytest
from scipy import stats

from vaelab.evidence import CANNOT_TELL, compare


def arms(effect, seed_sd, set_sd, seeds=3, sets=5, rng=None):
    """Two arms whose seed s shares a seed effect (paired), plus independent sample-set noise."""
    rng = rng or np.random.default_rng(0)
    a_seed, b_seed = rng.normal(0, seed_sd, (seeds, 1)), rng.normal(0, seed_sd, (seeds, 1))
    a = 10 + effect + a_seed + rng.normal(0, set_sd, (seeds, sets))
    b = 10 + b_seed + rng.normal(0, set_sd, (seeds, sets))
    return a, b


def test_a_large_effect_is_decided_both_ways():
    a, b = arms(effect=-5.0, seed_sd=0.2, set_sd=0.1)
    result = compare(a, b)
    assert result.verdict == "better" and result.decided
    assert result.difference == pytest.approx(a.mean() - b.mean())
    assert compare(b, a).verdict == "worse"
    assert compare(a, b, lower_is_better=False).verdict == "worse"
    assert result.covers == "3 seeds x 5 sample sets, paired by seed"


def test_seed_noise_is_not_hidden_by_small_sample_set_noise():
    # Sample sets agree to 0.01, but seeds of the same arm differ by ~2: a 1.0 difference cannot be told,
    # although a test on the sample sets alone would call it (many standard errors).
    a, b = arms(effect=-1.0, seed_sd=2.0, set_sd=0.01, rng=np.random.default_rng(3))
    # a rule blind to seeds: the SE from the spread of the sample sets within each seed
    within = a.var(axis=1, ddof=1).mean() / a.size + b.var(axis=1, ddof=1).mean() / b.size
    sets_only = (a.mean() - b.mean()) / np.sqrt(within)
    assert abs(sets_only) > 2  # what such a rule would call
    result = compare(a, b)
    assert result.verdict == CANNOT_TELL
    assert result.se > 0.3  # the SE carries the seed spread


def test_one_seed_cannot_decide_a_training_outcome_but_can_a_fixed_comparison():
    a, b = arms(effect=-5.0, seed_sd=1.0, set_sd=0.1, seeds=1)
    assert compare(a, b).verdict == CANNOT_TELL
    fixed = compare(a, b, about_training=False)
    assert fixed.verdict == "better" and fixed.covers == "1 seed x 5 sample sets, paired by sample set"


def test_the_bar_is_students_t_and_about_two_for_many_seeds():
    a, b = arms(effect=0.0, seed_sd=1.0, set_sd=0.1, seeds=3)
    assert compare(a, b).bar == pytest.approx(stats.t.ppf(0.975, 2))  # 4.30 with 3 paired seeds
    a, b = arms(effect=0.0, seed_sd=1.0, set_sd=0.1, seeds=200)
    assert compare(a, b).bar == pytest.approx(1.97, abs=0.01)


def test_no_effect_is_called_about_five_percent_of_the_time():
    rng = np.random.default_rng(1)
    calls = sum(compare(*arms(0.0, 1.0, 0.3, rng=rng)).decided for _ in range(2000))
    assert 0.03 < calls / 2000 < 0.07


def test_unpaired_arms_of_different_sizes():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, (4, 3)), rng.normal(8, 1, (3, 3))
    result = compare(a, b)
    assert result.verdict == "better" and "paired" not in result.covers and result.seeds == 3


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="non-finite"):
        compare([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="same shape"):
        compare(np.ones((3, 2)), np.ones((2, 2)), paired=True)
    with pytest.raises(ValueError, match="no noise"):
        compare([[1.0]], [[2.0]], about_training=False)
    single = compare([[1.0]], [[2.0]])  # one seed, one number: a training outcome cannot be told, and no SE
    assert single.verdict == CANNOT_TELL and math.isnan(single.se) and single.difference == -1.0


def test_the_noun_of_a_sample_set_is_named_in_what_the_rule_covered():
    rng = np.random.default_rng(4)
    per_image = rng.normal(0, 1, (1, 128)), rng.normal(0.5, 1, (1, 128))
    result = compare(*per_image, about_training=False, set_noun="test image")
    assert result.covers == "1 seed x 128 test images, paired by test image"
    assert compare(*per_image).verdict == CANNOT_TELL  # still one seed for a claim about training


def test_prose_helpers():
    from vaelab.evidence import count, listing, markdown_table, plus_minus, ratio, verdict_row

    assert [count(1, "epoch"), count(3, "seed"), count(2_000, "image"), count(0, "run")] == \
        ["one epoch", "three seeds", "2,000 images", "no runs"]
    assert count(2, "is", "are") == "two are"
    assert [listing([]), listing(["a"]), listing(["a", "b"]), listing(["a", "b", "c"])] == \
        ["", "a", "a and b", "a, b and c"]
    assert ratio(6.4, 2.0) == "3.2 times" and ratio(1.0, 0.0) == "–"
    a, b = arms(effect=-5.0, seed_sd=0.2, set_sd=0.1)
    result = compare(a, b)
    assert plus_minus(result) == f"{result.difference:+.2f} ± {result.se:.2f}"
    row = verdict_row("claim", "A vs B", result)
    assert row[2:] == ["3 seeds x 5 sample sets, paired by seed", plus_minus(result), "**better**"]
    table = markdown_table(["x", "y"], [[1, 2], ["a", "b"]]).data.splitlines()
    assert table == ["| x | y |", "|---|---|", "| 1 | 2 |", "| a | b |"]
