"""The benchmarks keep working: each runs here for a few steps on the CPU (their figures come from real runs)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "benchmarks"))

import bench_fid  # noqa: E402
import bench_training  # noqa: E402


def test_training_benchmark_runs_both_ways_and_counts_flops():
    result = bench_training.main(["--preset", "quick", "--steps", "2", "--warmup", "1", "--device", "cpu"])
    assert result["plain_images_per_s"] > 0 and result["fit_images_per_s"] > 0
    assert result["fit_over_plain"] > 0 and result["gflops_per_step"] > 1


@pytest.mark.filterwarnings("ignore:inception-fid")  # 12 images of 2048-d features, on purpose
def test_fid_benchmark_runs_both_ways_and_they_agree():
    result = bench_fid.main(["--images", "12", "--batch-size", "6", "--device", "cpu"])
    assert result["vaelab_images_per_s"] > 0 and result["pytorch_fid_images_per_s"] > 0
    # the same images through the same network: the same statistics, up to float summation order
    assert result["statistics_relative_difference"] < 1e-4
