"""The benchmarks keep working: each runs here for a few steps on the CPU (their figures come from real runs)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "benchmarks"))

import bench_training  # noqa: E402


def test_training_benchmark_runs_both_ways_and_counts_flops():
    result = bench_training.main(["--preset", "quick", "--steps", "2", "--warmup", "1", "--device", "cpu"])
    assert result["plain_images_per_s"] > 0 and result["fit_images_per_s"] > 0
    assert result["fit_over_plain"] > 0 and result["gflops_per_step"] > 1
