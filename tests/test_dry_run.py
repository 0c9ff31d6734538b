"""Every chapter executed in the gpu budget as a dry run, on the CPU: VAELAB_COMPUTE=gpu with VAELAB_DRY_RUN=1.

No GPU is needed to run every line of a chapter's GPU path: the dry run keeps the gpu budget's data sets, image
sizes and networks, and caps the steps, images, samples, sample sets, training seeds, importance samples and
mixture components (vaelab.train.DRY_RUN_LIMITS), so that every shape, branch, data loader, glued name and sentence of the GPU path
runs. The data that cannot be downloaded here (MNIST, CIFAR-10, CelebA, the FID network's weights) are stand-ins
in each one's own on-disk format (tests/standins.py, random Inception weights); Fashion-MNIST is the real
one. Nothing a dry run computes
means anything: the test checks that it runs, and records each chapter's time and the kernel's peak memory.

The chapters run in the book's order in one data folder, as on a Colab machine where a reader runs them one after
another: chapter 7 then measures the models chapters 4 to 6 trained, besides training its own.

    VAELAB_DRY_RUN_REPORT=report.json pytest tests/test_dry_run.py   # also writes the times and peak memory
"""
import json
import os
import shutil
import time
from datetime import datetime
from pathlib import Path

import nbformat
import pytest

import standins
from vaelab import data

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
STANDIN_IMAGES = 64  # images per split of each stand-in: more than a dry run's mixture fits (its few components
# need a few codes) and chapter 6's widget shows (6); a recipe would load up to DRY_RUN_LIMITS["images"]
PEAK_MEMORY_LIMIT_MIB = 8 * 1024  # the kernel's peak resident memory must stay under this (a laptop's share)

PEAK_CELL = """import json as _json, resource as _resource
print("DRY-RUN-PEAK " + _json.dumps({"peak_rss_mib": _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 1024}))"""


@pytest.fixture(scope="module")
def dry_run_environment(tmp_path_factory):
    """A data folder with the stand-ins (and the offline classifier of Fashion-MNIST, when one is cached already),
    and the environment of a dry run in the gpu budget, which the chapters' kernels inherit."""
    root = tmp_path_factory.mktemp("dry-run-data")
    standins.write_standins(root, images=STANDIN_IMAGES)
    for kept in ("classifiers", "estimates"):  # what chapter 3 would train and chapter.end count again: the same
        cached = data.data_root() / kept  # files, keyed by their data and settings, or by vaelab's code
        if cached.is_dir():
            shutil.copytree(cached, root / kept)
    environment = {"VAELAB_COMPUTE": "gpu", "VAELAB_DRY_RUN": "1", "VAELAB_DATA": str(root),
                   "TORCH_HOME": str(root / "torch"), "VAELAB_RUNS": None, "MPLBACKEND": None}
    saved = {key: os.environ.get(key) for key in environment}
    for key, value in environment.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    report = {}
    yield root, report
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if os.environ.get("VAELAB_DRY_RUN_REPORT"):
        Path(os.environ["VAELAB_DRY_RUN_REPORT"]).write_text(json.dumps(report, indent=2) + "\n")


def cell_seconds(cell) -> float:
    """How long a cell ran, from the timestamps nbclient records in its metadata (0 for Markdown)."""
    timing = cell.get("metadata", {}).get("execution", {})
    if "iopub.execute_input" not in timing or "shell.execute_reply" not in timing:
        return 0.0
    start, end = (datetime.fromisoformat(timing[key].replace("Z", "+00:00"))
                  for key in ("iopub.execute_input", "shell.execute_reply"))
    return (end - start).total_seconds()


def outputs_text(notebook) -> str:
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") if output.get("output_type") == "stream" else
                         "".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_a_chapter_runs_every_line_of_its_gpu_path_as_a_dry_run(chapter, dry_run_environment, tmp_path):
    from nbclient import NotebookClient

    _, report = dry_run_environment
    notebook = nbformat.read(chapter, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PEAK_CELL))
    start = time.perf_counter()
    NotebookClient(notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": tmp_path}}).execute()
    seconds = time.perf_counter() - start
    text = outputs_text(notebook)
    assert "compute mode: gpu" in text  # the gpu budget's path, not quick mode's
    peak = json.loads(text.split("DRY-RUN-PEAK ")[-1].splitlines()[0])["peak_rss_mib"]
    slowest = sorted(((cell_seconds(cell), index) for index, cell in enumerate(notebook.cells)), reverse=True)[:5]
    report[chapter.stem] = {"seconds": round(seconds, 1), "peak_rss_mib": round(peak),
                            "slowest_cells": {f"cell {index}": round(s, 1) for s, index in slowest}}
    print(f"{chapter.stem}: dry run in {seconds:.0f} s, peak memory {peak:,.0f} MiB; slowest cells: "
          + ", ".join(f"{index} ({s:.0f} s)" for s, index in slowest))
    assert peak < PEAK_MEMORY_LIMIT_MIB, f"{chapter.stem}: the dry run's kernel peaked at {peak:,.0f} MiB"
