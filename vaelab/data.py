"""Datasets by name, as float tensors in [0, 1].

    from vaelab import data
    train = data.load("fashion-mnist")            # ImageSet(images N x 1 x 28 x 28, labels N)
    test = data.load("cifar10", "test", limit=1000)

Every loader reads the dataset's own on-disk format, so a small file written in that format (as the tests do) goes
through exactly the same code as the real data. Data lives under `data_root()`.
"""
import gzip
import hashlib
import os
import pickle
import shutil
import socket
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import numpy as np
import platformdirs
import torch
import torchvision
from torch import Tensor
from PIL import Image
from torchvision.transforms.v2.functional import InterpolationMode, resize

DATASETS = ("mnist", "fashion-mnist", "cifar10", "celeba", "digits")

# Folders where an operating-system package installs a dataset (checked after the data root).
# A dict, not a constant inside a function, so tests can point it at their own folders.
SYSTEM_DIRS = {
    "mnist": [],
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],  # Debian: dataset-fashion-mnist
}
DOWNLOAD_TIMEOUT = 30.0  # seconds without an answer before a download gives up

# The four files of an MNIST-style dataset, as torchvision expects them in <root>/<Class>/raw/.
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

# CelebA: aligned 178x218 faces, cropped to the central 128x128 (rows 45..172, columns 25..152), then shrunk to 64x64,
# the usual preprocessing for 64x64 face VAEs.
CELEBA_SIZE = (218, 178)  # height, width of an aligned image
CELEBA_CROP = (slice(45, 173), slice(25, 153))
CELEBA_PARTITIONS = {"train": 0, "valid": 1, "test": 2}
CELEBA_ZIP = "img_align_celeba.zip"

# Images per split of the real data sets (what run-time estimates count; stand-in files hold fewer).
SPLIT_SIZES = {
    "mnist": {"train": 60_000, "test": 10_000},
    "fashion-mnist": {"train": 60_000, "test": 10_000},
    "cifar10": {"train": 50_000, "test": 10_000},
    "celeba": {"train": 162_770, "valid": 19_867, "test": 19_962},
    "digits": {"train": 1_437, "test": 360},
}
SPLITS = {name: tuple(sizes) for name, sizes in SPLIT_SIZES.items()}

HOW_TO_GET = {
    "mnist": [
        'call load("mnist", download=True) on a machine with internet access, or',
        "put the four files from https://ossci-datasets.s3.amazonaws.com/mnist/ "
        "(gunzipped: train-images-idx3-ubyte, ...) into {root}/MNIST/raw/",
    ],
    "fashion-mnist": [
        "install the Debian/Ubuntu package: sudo apt install dataset-fashion-mnist, or",
        'call load("fashion-mnist", download=True) on a machine with internet access, or',
        "put the four files from https://github.com/zalandoresearch/fashion-mnist "
        "(gunzipped: train-images-idx3-ubyte, ...) into {root}/FashionMNIST/raw/",
    ],
    "cifar10": [
        'call load("cifar10", download=True) on a machine with internet access, or',
        "download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and extract it into {root}/",
    ],
    "celeba": [
        "the automatic download comes from Google Drive, which often refuses it (a daily quota; then the file is an "
        "HTML page, a BadZipFile). Download by hand instead, from "
        "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Align&Cropped Images): img_align_celeba.zip and "
        "list_eval_partition.txt (optionally list_attr_celeba.txt), and put them under {root}/celeba/ "
        "(the zip as it is, or unzipped as {root}/celeba/img_align_celeba/); on Colab, upload them or copy them "
        "from Google Drive into that folder",
    ],
}


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is in none of the places looked in and could not be downloaded."""


class ImageSet(NamedTuple):
    """A whole split of a dataset in memory."""

    images: Tensor  # float32, N x C x H x W, values in [0, 1]
    labels: Tensor  # int64, N class labels (CelebA: N x 40 attribute bits, N x 0 without the attribute file)


def fid_weights_path() -> Path:
    """Where torch.hub caches the FID weights (vaelab.metrics.InceptionFeatures): $TORCH_HOME/hub/checkpoints/<file>."""
    from pytorch_fid.inception import FID_WEIGHTS_URL  # imported here: pytorch-fid is slow to import

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(FID_WEIGHTS_URL).path).name


@contextmanager
def network_timeout():
    """Give every socket opened inside DOWNLOAD_TIMEOUT: torchvision and torch.hub download with urllib and no
    timeout, so a network that accepts a connection and never answers would hang a chapter for minutes."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def data_root() -> Path:
    """Folder of the datasets, cached statistics and training runs: $VAELAB_DATA if set; else the data/ folder of the
    checkout vaelab was imported from; else (pip, Colab) the user cache folder, so that notebooks share one copy."""
    if os.environ.get("VAELAB_DATA"):
        return Path(os.environ["VAELAB_DATA"]).expanduser()
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "data").is_dir() and (checkout / "pyproject.toml").is_file():
        return checkout / "data"
    return Path(platformdirs.user_cache_dir("vaelab"))


def load(name: str, split: str = "train", *, root: str | os.PathLike | None = None, pad_to_32: bool = False,
         limit: int | None = None, download: bool = True) -> ImageSet:
    """Load one split of a dataset as float32 images in [0, 1] with their labels.

    name: one of DATASETS. split: "train" or "test" ("valid" too for celeba). root: data folder, default
    data_root(). limit: keep only the first `limit` images. pad_to_32: zero-pad 28x28 images to 32x32 (image at
    [2:30, 2:30]) so that architectures built for 32x32 inputs can be reused. download: allow fetching the dataset
    from the internet when it is not found locally.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS[name]:
        raise ValueError(f"{name} has no split {split!r}; choose one of {', '.join(SPLITS[name])}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    root = Path(root) if root is not None else data_root()

    if name in ("mnist", "fashion-mnist"):
        images, labels = _load_idx(name, split, root, download)
    elif name == "cifar10":
        images, labels = _load_cifar10(split, root, download)
    elif name == "celeba":
        images, labels = _load_celeba(split, root, download, limit)
    else:
        images, labels = _load_digits(split)

    images, labels = images[:limit], labels[:limit]
    images = images.float() / (16 if name == "digits" else 255)
    if pad_to_32:
        if images.shape[-2:] != (28, 28):
            raise ValueError(f"pad_to_32 needs 28x28 images, {name} has {tuple(images.shape[-2:])}")
        images = torch.nn.functional.pad(images, (2, 2, 2, 2))
    # NaN fails both comparisons, so this also rejects non-finite values.
    if not ((images >= 0) & (images <= 1)).all():
        raise ValueError(f"{name} {split}: pixel values outside [0, 1]")
    return ImageSet(images.contiguous(), labels.long())


# ---------------------------------------------------------------- MNIST and Fashion-MNIST


def _load_idx(name: str, split: str, root: Path, download: bool) -> tuple[Tensor, Tensor]:
    """MNIST-style IDX files through torchvision: root, then system folders, then download."""
    dataset_class = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
    raw = root / dataset_class.__name__ / "raw"  # where torchvision reads the uncompressed files
    looked_in = [f"{raw} (torchvision layout)"]
    if not _has_idx_files(raw):
        for system_dir in SYSTEM_DIRS.get(name, []):
            looked_in.append(f"{system_dir} (system package)")
            if _has_idx_files(system_dir, ".gz"):
                _gunzip_idx_files(system_dir, raw)
                break
    _ensure(name, split, root, looked_in, present=lambda: _has_idx_files(raw),
            fetch=lambda: dataset_class(root, download=True), download=download)

    prefix = "train" if split == "train" else "t10k"
    files = f"{raw / prefix}-images-idx3-ubyte and {raw / prefix}-labels-idx1-ubyte"
    try:
        dataset = dataset_class(root, train=split == "train")
    except (AssertionError, RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"could not read the IDX files {files}: {error!r}") from error
    if len(dataset.data) != len(dataset.targets):
        raise ValueError(f"{files} hold {len(dataset.data)} images but {len(dataset.targets)} labels")
    return dataset.data.unsqueeze(1), dataset.targets


def _has_idx_files(folder: Path, suffix: str = "") -> bool:
    # torchvision needs all four files even to read one split.
    return all((folder / f"{file}{suffix}").is_file() for file in IDX_FILES)


def _gunzip_idx_files(source_dir: Path, raw: Path) -> None:
    """Decompress <source_dir>/*.gz into raw/, where torchvision reads them."""
    raw.mkdir(parents=True, exist_ok=True)
    for file in IDX_FILES:
        source = source_dir / f"{file}.gz"
        # A name of its own for every writer: processes that unpack at the same time must not write into one file.
        fd, partial = tempfile.mkstemp(dir=raw, prefix=f"{file}.", suffix=".partial")
        try:
            with gzip.open(source) as compressed, os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(compressed, out)
            os.replace(partial, raw / file)  # a complete file or none, even if interrupted
        except (OSError, EOFError) as error:
            Path(partial).unlink(missing_ok=True)
            raise ValueError(f"could not decompress {source} into {raw}: {error}") from error


# ---------------------------------------------------------------- CIFAR-10


def _load_cifar10(split: str, root: Path, download: bool) -> tuple[Tensor, Tensor]:
    """The official python pickle batches in root/cifar-10-batches-py/, read by our own code because torchvision's
    CIFAR10 insists on the md5 sums of the real files; torchvision only downloads and extracts them."""
    folder = root / CIFAR10_FOLDER
    paths = [folder / batch for batch in CIFAR10_BATCHES["train"] + CIFAR10_BATCHES["test"]]
    _ensure("cifar10", split, root, [f"{folder} (official python batches)"],
            present=lambda: all(p.is_file() for p in paths),
            fetch=lambda: torchvision.datasets.CIFAR10(root, download=True), download=download)

    batches = [_read_cifar10_batch(folder / batch) for batch in CIFAR10_BATCHES[split]]
    return torch.cat([images for images, _ in batches]), torch.cat([labels for _, labels in batches])


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes, numbers and numpy arrays, and nothing else: a pickle can name any function
    to call while it loads, so a crafted file in a data folder must not be read with plain pickle.load."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch holds only arrays")
        return super().find_class(module, name)


def _read_cifar10_batch(path: Path) -> tuple[Tensor, Tensor]:
    """One batch: a pickled dict with b"data" (uint8 N x 3072, R then G then B planes) and b"labels"."""
    try:
        with open(path, "rb") as file:
            batch = _ArraysOnlyUnpickler(file, encoding="bytes").load()  # Python 2 pickles: keys are bytes
        pixels = np.asarray(batch[b"data"])
        labels = torch.tensor(batch[b"labels"], dtype=torch.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a readable CIFAR-10 batch: {error!r}") from error
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072 or len(pixels) != len(labels):
        raise ValueError(f"{path}: expected uint8 data of shape N x 3072 and N labels, "
                         f"got {pixels.dtype} {pixels.shape} and {len(labels)} labels")
    return torch.from_numpy(pixels.copy()).reshape(-1, 3, 32, 32), labels


# ---------------------------------------------------------------- CelebA


def _load_celeba(split: str, root: Path, download: bool, limit: int | None) -> tuple[Tensor, Tensor]:
    """Aligned CelebA faces cropped and resized to 64x64, in sorted file-name order. Decoding ~160k JPEGs takes
    minutes, so each split is cached as root/celeba/celeba64_<split>.pt, rebuilt when the files it was built from
    change (delete it if you edit images in place)."""
    folder = root / "celeba"
    images_dir, partition_file = folder / "img_align_celeba", folder / "list_eval_partition.txt"
    attributes_file = folder / "list_attr_celeba.txt"
    if not images_dir.is_dir() and (folder / CELEBA_ZIP).is_file():
        _unzip_celeba(folder / CELEBA_ZIP, images_dir, root)
    _ensure("celeba", split, root, [f"{images_dir} (aligned JPEGs)", f"{partition_file} (official split)"],
            present=lambda: images_dir.is_dir() and partition_file.is_file(),
            fetch=lambda: torchvision.datasets.CelebA(root, split="all", download=True), download=download)

    # The split's images that are actually on disk, so a partial download still works.
    on_disk = set(os.listdir(images_dir))
    names = sorted(name for name, part in _read_partition(partition_file).items()
                   if part == CELEBA_PARTITIONS[split] and name in on_disk)
    fingerprint = hashlib.sha1("\n".join(names).encode()).hexdigest()
    cache_key = f"{len(names)} files, sha1 of names {fingerprint}, attributes {attributes_file.is_file()}"

    cache_file = folder / f"celeba64_{split}.pt"
    if cache_file.is_file():
        try:
            cache = torch.load(cache_file, weights_only=True)
        except Exception as error:
            raise ValueError(f"could not read the cache {cache_file}; delete it to rebuild: {error!r}") from error
        if cache.get("key") == cache_key:
            return cache["images"], cache["labels"]

    # Asked for a few images only: decode just those and leave the full cache for later.
    few = limit is not None and limit < len(names)
    names = names[:limit]
    images = torch.zeros(len(names), 3, 64, 64, dtype=torch.uint8)  # filled in place: no second copy
    for i, name in enumerate(names):
        images[i] = _read_celeba64(images_dir / name)
    labels = (_read_attributes(attributes_file, names) if attributes_file.is_file()
              else torch.zeros(len(names), 0, dtype=torch.int64))
    if not few:
        partial = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.partial")
        torch.save({"key": cache_key, "images": images, "labels": labels}, partial)
        os.replace(partial, cache_file)  # readers never see a half-written cache
    return images, labels


def _unzip_celeba(archive: Path, images_dir: Path, root: Path) -> None:
    """Extract img_align_celeba.zip (put there by hand, or left by torchvision's download) into images_dir, whole
    or not at all. A file that is no zip (Google Drive's quota page) or is cut short is a clear error."""
    partial = Path(tempfile.mkdtemp(dir=images_dir.parent, prefix=f"{images_dir.name}.", suffix=".partial"))
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(partial)
        # the official zip holds a folder img_align_celeba/ with the images
        inner = partial / images_dir.name
        if not images_dir.is_dir():  # another process may have finished first: its copy is as good
            os.replace(inner if inner.is_dir() else partial, images_dir)
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        hint = "\n".join(f"  {line.format(root=root)}" for line in HOW_TO_GET["celeba"])
        raise DatasetNotFoundError(
            f"{archive} is not a complete zip of CelebA's aligned images ({error!r}): an interrupted download, or "
            f"the page Google Drive returns instead of the file when its quota is spent. Delete it, then:\n{hint}"
        ) from error
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _read_partition(path: Path) -> dict[str, int]:
    """list_eval_partition.txt: lines "000001.jpg 0" with 0 = train, 1 = valid, 2 = test."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    try:
        return {file: int(part) for file, part in rows}
    except ValueError as error:
        raise ValueError(f"{path}: expected lines like '000001.jpg 0': {error}") from error


def _read_attributes(path: Path, names: list[str]) -> Tensor:
    """list_attr_celeba.txt (a count, the 40 attribute names, then "000001.jpg -1 1 ...") -> 0/1 bits."""
    lines = path.read_text().splitlines()
    try:
        attribute_names = lines[1].split()
        rows = {fields[0]: fields[1:] for fields in map(str.split, lines[2:]) if fields}
        values = torch.tensor([[int(value) for value in rows[name]] for name in names], dtype=torch.int64)
        values = values.reshape(len(names), len(attribute_names))
    except (IndexError, KeyError, ValueError, RuntimeError) as error:
        raise ValueError(f"{path}: missing or malformed attributes ({error!r})") from error
    return (values > 0).long()


def _read_celeba64(path: Path) -> Tensor:
    """One aligned 178x218 image -> uint8 3 x 64 x 64 of the central face crop."""
    try:
        with Image.open(path) as file:
            image = torch.from_numpy(np.array(file.convert("RGB"))).permute(2, 0, 1)  # H x W x C -> C x H x W
    except OSError as error:  # also what Pillow raises for unknown or truncated images
        raise ValueError(f"could not decode the image {path}: {error}") from error
    if tuple(image.shape[1:]) != CELEBA_SIZE:
        raise ValueError(f"{path} is {image.shape[2]}x{image.shape[1]}, expected an aligned 178x218 CelebA image")
    crop = image[:, CELEBA_CROP[0], CELEBA_CROP[1]]
    return resize(crop, [64, 64], interpolation=InterpolationMode.BILINEAR, antialias=True)


# ---------------------------------------------------------------- digits


def _load_digits(split: str) -> tuple[Tensor, Tensor]:
    """scikit-learn's 1797 8x8 digits (values 0..16), always offline: the first 1437 (80%) are train, the rest test."""
    from sklearn.datasets import load_digits  # imported here: sklearn is slow to import

    digits = load_digits()
    images = torch.from_numpy(digits.images).unsqueeze(1)  # float64 0..16, N x 1 x 8 x 8
    labels = torch.from_numpy(digits.target)
    part = slice(None, 1437) if split == "train" else slice(1437, None)
    return images[part], labels[part]


# ---------------------------------------------------------------- finding or downloading


def _ensure(name, split, root, looked_in, *, present, fetch, download) -> None:
    """Call `fetch` (a torchvision download) when `present()` is False and `download` allows; if the data is still
    missing, raise an error that says where we looked and how to get it."""
    tried = "not tried (download=False)"
    if not present() and download:
        tried = "finished, but the files are still missing"
        try:
            with network_timeout():
                fetch()
        except Exception as error:  # any failure here just means "not available"; it is reported below
            tried = f"failed: {error!r}"
    if present():
        return
    lines = [f"{name} ({split} split) not found. Looked in:", *(f"  {place}" for place in looked_in),
             f"Download {tried}.", "To get it:", *(f"  {hint.format(root=root)}" for hint in HOW_TO_GET[name]),
             f"Or set the environment variable VAELAB_DATA to a data folder that has it (now using {root})."]
    raise DatasetNotFoundError("\n".join(lines))
