"""Small random stand-ins of the data sets a GPU chapter downloads, each written in that data set's own on-disk
format, so that the tests and a dry run (VAELAB_DRY_RUN=1) go offline through the same loading code as real data
(vaelab.data). Nothing computed from a stand-in means anything. From the command line, for a dry run by hand:

    python tests/standins.py ROOT    # then VAELAB_DATA=ROOT TORCH_HOME=ROOT/torch VAELAB_DRY_RUN=1 ...
"""
import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from vaelab.data import CELEBA_SIZE, CELEBA_ZIP, CIFAR10_BATCHES, CIFAR10_FOLDER, fid_weights_path


def write_standins(root: str | os.PathLike, *, images: int = 64, seed: int = 0,
                   datasets: tuple[str, ...] = ("mnist", "cifar10", "celeba", "inception")) -> dict[str, Path]:
    """Write small random stand-ins of the data sets a GPU chapter downloads, each in its own on-disk format, so
    that a dry run (VAELAB_DRY_RUN=1, VAELAB_DATA=root) goes offline through the same loading code as real data:

    mnist      the four IDX files in root/MNIST/raw/ (`images` training and test images)
    cifar10    the pickled python batches in root/cifar-10-batches-py/ (five training batches and a test batch)
    celeba     root/celeba/img_align_celeba.zip of aligned 178x218 JPEGs with list_eval_partition.txt and
               list_attr_celeba.txt (`images` per split)
    inception  the FID network's weights file with random weights, at root/torch/hub/checkpoints/ (set
               TORCH_HOME=root/torch for vaelab.metrics.InceptionFeatures to find it)

    Fashion-MNIST is not stood in for: it is installed offline (the Debian package dataset-fashion-mnist).
    Returns the path written for each data set. Nothing computed from stand-ins means anything.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    written = {}
    for name in datasets:
        if name == "mnist":
            raw = root / "MNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            for prefix in ("train", "t10k"):
                _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (images, 28, 28), dtype=np.uint8))
                _write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, images, dtype=np.uint8))
            written[name] = raw
        elif name == "cifar10":
            folder = root / CIFAR10_FOLDER
            folder.mkdir(parents=True, exist_ok=True)
            for split, batches in CIFAR10_BATCHES.items():
                for batch in batches:
                    count = max(2, images // len(batches))
                    with open(folder / batch, "wb") as file:
                        pickle.dump({b"batch_label": batch.encode(),
                                     b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                                     b"labels": rng.integers(0, 10, count).tolist()}, file)
            written[name] = folder
        elif name == "celeba":
            written[name] = _write_celeba_standin(root / "celeba", images, rng)
        elif name == "inception":
            path = root / "torch" / "hub" / "checkpoints" / fid_weights_path().name
            path.parent.mkdir(parents=True, exist_ok=True)
            generator_state = torch.get_rng_state()
            torch.manual_seed(seed)
            net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
            torch.set_rng_state(generator_state)
            torch.save(net.state_dict(), path)
            written[name] = path
        else:
            raise ValueError(f"no stand-in for {name!r}; the stand-ins are mnist, cifar10, celeba and inception")
    return written


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: a big-endian magic number (2051 images, 2049 labels), the dimensions, then the bytes."""
    header = (2051 if array.ndim == 3 else 2049).to_bytes(4, "big")
    header += b"".join(size.to_bytes(4, "big") for size in array.shape)
    path.write_bytes(header + array.tobytes())


def _write_celeba_standin(folder: Path, per_split: int, rng: np.random.Generator) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{i + 1:06d}.jpg" for i in range(3 * per_split)]
    with zipfile.ZipFile(folder / CELEBA_ZIP, "w") as zipped:
        for name in names:
            pixels = rng.integers(0, 256, (*CELEBA_SIZE, 3), dtype=np.uint8)
            encoded = io.BytesIO()
            Image.fromarray(pixels).save(encoded, format="JPEG")
            zipped.writestr(f"img_align_celeba/{name}", encoded.getvalue())
    (folder / "list_eval_partition.txt").write_text(
        "".join(f"{name} {i // per_split}\n" for i, name in enumerate(names)))
    attributes = [str(len(names)), " ".join(f"Attribute_{j}" for j in range(40))]
    attributes += [name + " " + " ".join(rng.choice(["-1", "1"], 40)) for name in names]
    (folder / "list_attr_celeba.txt").write_text("\n".join(attributes) + "\n")
    return folder


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Write stand-in data sets for an offline dry run (write_standins).")
    parser.add_argument("root", type=Path, help="the data folder (then VAELAB_DATA=root, TORCH_HOME=root/torch)")
    parser.add_argument("--images", type=int, default=64, help="images per split (default 64)")
    arguments = parser.parse_args()
    for dataset, path in write_standins(arguments.root, images=arguments.images).items():
        print(f"{dataset:10s} {path}")
