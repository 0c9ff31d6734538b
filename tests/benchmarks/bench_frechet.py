"""Benchmark: vaelab's Fréchet distance against pytorch-fid's, on 2048-d statistics like Inception's.

    python tests/benchmarks/bench_frechet.py [--dim 2048] [--samples 10000] [--few 256] [--repeats 3]

pytorch-fid computes tr((C1 C2)^{1/2}) with scipy.linalg.sqrtm of the non-symmetric product C1 C2 (a Schur
decomposition in complex arithmetic); vaelab takes two symmetric eigendecompositions (see
`vaelab.metrics.frechet_distance`). Both get the same statistics, in one run; the script prints both values,
their relative difference and the ratio of the best wall-clock times.

Then the distance of `--few` samples (fewer than the dimensions, as in a dry run or a small sample set) to the
first statistics: through their n x n matrix (`vaelab.metrics.frechet_distance_of_samples`, what
`frechet_distance_between` computes) against through their d x d covariance (`frechet_distance`).
"""
import argparse
import time

import numpy as np
from pytorch_fid.fid_score import calculate_frechet_distance

from vaelab.metrics import frechet_distance, frechet_distance_of_samples


def features(rng: np.random.Generator, samples: int, dim: int, rank: int) -> np.ndarray:
    # Non-negative, correlated, of limited rank: pool features of a ReLU network look like this.
    mixing = rng.normal(size=(rank, dim)) / np.sqrt(rank)
    return np.maximum(rng.normal(size=(samples, rank)) @ mixing, 0)


def best_time(fn, repeats: int) -> tuple[float, float]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--few", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    stats = []
    for shift in (0.0, 0.1):
        f = features(rng, args.samples, args.dim, rank=args.dim // 2) + shift
        stats.append((f.mean(0), np.cov(f, rowvar=False)))
    (m1, c1), (m2, c2) = stats

    t_vaelab, d_vaelab = best_time(lambda: frechet_distance(m1, c1, m2, c2), args.repeats)
    t_scipy, d_scipy = best_time(lambda: calculate_frechet_distance(m1, c1, m2, c2), args.repeats)
    print(f"{args.dim}-d statistics of {args.samples:,} samples, best of {args.repeats}")
    print(f"  vaelab (eigh)            {d_vaelab:.6f}  {t_vaelab:7.2f} s")
    print(f"  pytorch-fid (sqrtm)      {d_scipy:.6f}  {t_scipy:7.2f} s")
    print(f"  relative difference      {abs(d_vaelab - d_scipy) / d_scipy:.1e}")
    print(f"  speed-up of vaelab       {t_scipy / t_vaelab:.1f}x")

    few = features(rng, args.few, args.dim, rank=args.dim // 2) + 0.1
    t_small, d_small = best_time(lambda: frechet_distance_of_samples(few, m1, c1), args.repeats)
    t_cov, d_cov = best_time(lambda: frechet_distance(few.mean(0), np.cov(few, rowvar=False), m1, c1), args.repeats)
    print(f"{args.few:,} samples against those statistics, best of {args.repeats}")
    print(f"  n x n route              {d_small:.6f}  {t_small:7.2f} s")
    print(f"  d x d route (covariance) {d_cov:.6f}  {t_cov:7.2f} s")
    print(f"  relative difference      {abs(d_small - d_cov) / d_cov:.1e}")
    print(f"  speed-up of the n x n route {t_cov / t_small:.1f}x")


if __name__ == "__main__":
    main()
