"""FID throughput of vaelab against pytorch-fid's command line, on the same images with the same weights.

    python tests/benchmarks/bench_fid.py --images 10000            # on a GPU, with the real FID weights cached
    python tests/benchmarks/bench_fid.py --images 20 --device cpu  # what CI runs: both ways still work and agree

Two sets of n test images each (Fashion-MNIST's test split, else scikit-learn's digits) go through the FID network
both ways, to the feature statistics (mean and covariance) the FID is computed from: vaelab's InceptionFeatures on
tensors in memory (`vaelab.metrics`), and pytorch-fid's command line on the same images written as PNG files, which
is how that tool is used (writing the files is not timed; starting the command and loading its network is, since
every use pays it). Reported: images per second each, the ratio, and the largest difference between the two ways'
statistics, which checks that they agree. Without the real FID weights in the torch.hub cache both ways use the
same randomly initialised network: the speed is the same, the FID meaningless.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torchvision.utils import save_image

from vaelab import data, metrics


def load_images(n: int) -> torch.Tensor:
    for name in ("fashion-mnist", "digits"):
        try:
            images = data.load(name, "test", limit=2 * n).images
        except (FileNotFoundError, RuntimeError):
            continue
        if len(images) >= 2 * n:
            return images
    raise SystemExit(f"no data set with {2 * n} test images is available here")


def weights_file(torch_home: Path) -> tuple[Path, str]:
    """The real FID weights if cached, else random ones of the same network, put where pytorch-fid looks."""
    real = metrics.fid_weights_path()
    target = torch_home / "hub" / "checkpoints" / real.name
    target.parent.mkdir(parents=True)
    if real.is_file():
        target.symlink_to(real)
        return target, "the FID weights"
    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True, num_classes=1008)
    torch.save(net.state_dict(), target)
    return target, "random weights (the FID values are meaningless; the speed is not)"


def with_vaelab(sets, weights: Path, device: str, batch_size: int) -> tuple[float, list]:
    start = time.perf_counter()
    extractor = metrics.InceptionFeatures(weights, device=device)
    stats = [metrics.feature_statistics(extractor, images, batch_size=batch_size) for images in sets]
    return time.perf_counter() - start, [(s.mean, s.cov) for s in stats]


def with_pytorch_fid(sets, folder: Path, torch_home: Path, device: str, batch_size: int) -> tuple[float, list]:
    """`python -m pytorch_fid --save-stats folder stats.npz` per set: the statistics the FID is computed from
    (its two-folder form would also compute the distance, which its scipy sqrtm refuses for fewer images than
    feature dimensions; the distance itself is timed separately, bench_frechet.py)."""
    for i, images in enumerate(sets):
        (folder / f"set{i}").mkdir()
        for j, image in enumerate(images):
            save_image(image, folder / f"set{i}" / f"{j:05d}.png")
    start = time.perf_counter()
    for i in range(len(sets)):
        command = [sys.executable, "-m", "pytorch_fid", "--save-stats", str(folder / f"set{i}"),
                   str(folder / f"set{i}.npz"), "--device", device, "--batch-size", str(batch_size),
                   "--num-workers", str(min(8, os.cpu_count() or 1))]
        out = subprocess.run(command, capture_output=True, text=True,
                             env={**os.environ, "TORCH_HOME": str(torch_home)})
        if out.returncode:
            raise RuntimeError(f"pytorch-fid failed:\n{out.stderr}")
    seconds = time.perf_counter() - start
    return seconds, [tuple(np.load(folder / f"set{i}.npz")[k] for k in ("mu", "sigma")) for i in range(len(sets))]


def relative_difference(ours: list, theirs: list) -> float:
    """The largest difference between the two ways' means and covariances, relative to the largest entry."""
    return max(float(np.abs(a - b).max() / np.abs(b).max()) for pair in zip(ours, theirs) for a, b in zip(*pair))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000, help="images per set (two sets)")
    parser.add_argument("--batch-size", type=int, default=50, help="both ways (pytorch-fid's default: 50)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    images = load_images(args.images)
    sets = [images[:args.images], images[args.images:2 * args.images]]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights, which = weights_file(tmp / "torch_home")
        ours_s, ours = with_vaelab(sets, weights, args.device, args.batch_size)
        theirs_s, theirs = with_pytorch_fid(sets, tmp, tmp / "torch_home", args.device, args.batch_size)
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    result = {"device": name, "weights": which, "images": 2 * args.images,
              "vaelab_images_per_s": 2 * args.images / ours_s, "pytorch_fid_images_per_s": 2 * args.images / theirs_s,
              "vaelab_over_pytorch_fid": theirs_s / ours_s,
              "statistics_relative_difference": relative_difference(ours, theirs)}
    if args.images >= 2048:  # full-rank covariances: the FID itself, from each way's statistics
        result["fid"] = metrics.frechet_distance(*ours[0], *ours[1])
    for key, value in result.items():
        print(f"{key:26s} {value:.4g}" if isinstance(value, float) else f"{key:26s} {value}")
    return result


if __name__ == "__main__":
    main()
