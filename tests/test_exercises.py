"""Every chapter's exercises: at least three, at least two of them coding exercises whose stub runs (and reports
"not done yet") and whose hidden solution passes the same self-check, against an independent computation."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.exercises import EXERCISES, check

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
CHECK_CALL = re.compile(r'check\("(?P<label>[\w-]+)",\s*(?P<function>\w+)\)')
SOLUTION = re.compile(r":{3,}\{solution\} (?P<label>[\w-]+)\n.*?```python\n(?P<code>.*?)```", re.S)


def cells(chapter: Path, kind: str) -> list[str]:
    notebook = json.loads(chapter.read_text())
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == kind]


def coding_exercises(chapter: Path) -> dict[str, tuple[str, str]]:
    """label -> (the stub cell's source, the name of the function it checks)."""
    found = {}
    for source in cells(chapter, "code"):
        for match in CHECK_CALL.finditer(source):
            found[match["label"]] = (source, match["function"])
    return found


def solutions(chapter: Path) -> dict[str, str]:
    return {m["label"]: m["code"] for text in cells(chapter, "markdown") for m in SOLUTION.finditer(text)}


def test_every_chapter_has_at_least_three_exercises_two_of_them_coding():
    assert CHAPTERS
    for chapter in CHAPTERS:
        markdown = "\n".join(cells(chapter, "markdown"))
        exercises = re.findall(r"\{exercise\}", markdown)
        coding = coding_exercises(chapter)
        assert len(exercises) >= 3, f"{chapter.name}: {len(exercises)} exercises"
        assert len(coding) >= 2, f"{chapter.name}: {len(coding)} coding exercises"
        assert set(coding) <= set(EXERCISES), f"{chapter.name}: a check without cases: {set(coding) - set(EXERCISES)}"
        assert set(coding) <= set(solutions(chapter)), f"{chapter.name}: coding exercises without a solution"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_stubs_report_not_done_and_solutions_pass_the_self_checks(chapter, capsys):
    for label, (stub_cell, function) in coding_exercises(chapter).items():
        stub_namespace = {"np": np, "torch": torch, "check": lambda *args: None}
        exec(stub_cell, stub_namespace)
        assert check(label, stub_namespace[function]) is None, f"{label}: the stub should read as not done"
        assert "not done yet" in capsys.readouterr().out

        solution_namespace = {"np": np, "torch": torch}
        exec(solutions(chapter)[label], solution_namespace)
        assert check(label, solution_namespace[function]) is True, f"{label}: the solution fails its own check"
        assert "all cases agree" in capsys.readouterr().out


def test_a_wrong_answer_is_reported_not_raised(capsys):
    assert check("ex-vae-kl-diag", lambda mu, logvar: mu.sum(-1)) is False
    assert "some cases disagree" in capsys.readouterr().out
    with pytest.raises(KeyError, match="ex-vae-kl-diag"):
        check("no-such-exercise", lambda: None)
