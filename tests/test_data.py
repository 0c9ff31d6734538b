"""vaelab.data on small files written in each dataset's own on-disk format."""

import gzip
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import platformdirs
import pytest
import torch
import torchvision
from PIL import Image

import standins
from vaelab import data

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    """No test sees the machine's data folders or environment unless it asks to."""
    monkeypatch.setattr(data, "SYSTEM_DIRS", {"mnist": [], "fashion-mnist": []})
    monkeypatch.delenv("VAELAB_DATA", raising=False)


# ---------------------------------------------------------------- MNIST-style IDX files


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Big-endian IDX: magic 2051 + N, H, W for images; magic 2049 + N for labels."""
    magic = 2051 if array.ndim == 3 else 2049
    payload = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if compress else payload)


def write_idx_dataset(folder: Path, seed: int, compress: bool = False, n_train: int = 5) -> dict[str, np.ndarray]:
    """Four IDX files (n_train train, 3 test images) of random pixels in 1..255, so zero padding stands out."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(1, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(1, 256, (3, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 3, dtype=np.uint8),
    }
    arrays["train-images-idx3-ubyte"][0, 0, 0] = 255  # the top of the range must map to exactly 1
    for name, array in arrays.items():
        write_idx(folder / (name + ".gz" if compress else name), array, compress)
    return arrays


def as_float(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).float().unsqueeze(1) / 255


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_files_load_as_written(tmp_path, name):
    arrays = write_idx_dataset(tmp_path / TORCHVISION_FOLDER[name] / "raw", seed=0)
    for split, prefix in [("train", "train"), ("test", "t10k")]:
        images, labels = data.load(name, split, root=tmp_path, download=False)
        assert images.dtype == torch.float32 and images.shape == (len(arrays[f"{prefix}-labels-idx1-ubyte"]), 1, 28, 28)
        assert torch.equal(images, as_float(arrays[f"{prefix}-images-idx3-ubyte"]))
        assert labels.dtype == torch.int64
        assert labels.tolist() == arrays[f"{prefix}-labels-idx1-ubyte"].tolist()
    assert images.min() > 0 and data.load(name, root=tmp_path, download=False).images.max() == 1


def test_limit_keeps_the_first_images_and_pad_to_32_centres_them(tmp_path):
    arrays = write_idx_dataset(tmp_path / "MNIST" / "raw", seed=1)
    images, labels = data.load("mnist", root=tmp_path, limit=2, pad_to_32=True, download=False)
    assert images.shape == (2, 1, 32, 32) and labels.tolist() == arrays["train-labels-idx1-ubyte"][:2].tolist()
    assert torch.equal(images[:, :, 2:30, 2:30], as_float(arrays["train-images-idx3-ubyte"][:2]))
    border = images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.abs().sum() == 0  # every written pixel is > 0, so only the padding can be zero
    assert len(data.load("mnist", root=tmp_path, limit=0, download=False).images) == 0


def test_fashion_mnist_from_a_system_folder_is_decompressed_into_root(tmp_path, monkeypatch):
    system_dir = tmp_path / "usr-share-datasets"
    arrays = write_idx_dataset(system_dir, seed=2, compress=True)
    monkeypatch.setitem(data.SYSTEM_DIRS, "fashion-mnist", [tmp_path / "absent", system_dir])
    root = tmp_path / "root"
    images, labels = data.load("fashion-mnist", "test", root=root, download=False)
    assert torch.equal(images, as_float(arrays["t10k-images-idx3-ubyte"]))
    assert labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    raw = root / "FashionMNIST" / "raw"
    assert sorted(path.name for path in raw.iterdir()) == sorted(data.IDX_FILES)  # no leftover partial files
    # The decompressed copy is what later loads read, even once the system folder is gone.
    monkeypatch.setitem(data.SYSTEM_DIRS, "fashion-mnist", [])
    assert torch.equal(data.load("fashion-mnist", "test", root=root, download=False).images, images)


def test_files_under_root_win_over_the_system_folder(tmp_path, monkeypatch):
    in_root = write_idx_dataset(tmp_path / "FashionMNIST" / "raw", seed=3)
    write_idx_dataset(tmp_path / "system", seed=4, compress=True)
    monkeypatch.setitem(data.SYSTEM_DIRS, "fashion-mnist", [tmp_path / "system"])
    images, _ = data.load("fashion-mnist", root=tmp_path, download=False)
    assert torch.equal(images, as_float(in_root["train-images-idx3-ubyte"]))


def test_download_is_the_last_resort_and_its_failure_is_reported(tmp_path, monkeypatch):
    def fake_download(dataset):  # stands in for the network: writes the files where torchvision would
        write_idx_dataset(Path(dataset.raw_folder), seed=5)

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fake_download)
    assert data.load("mnist", root=tmp_path / "ok").images.shape == (5, 1, 28, 28)

    def failing_download(dataset):
        raise RuntimeError("no route to host")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", failing_download)
    with pytest.raises(data.DatasetNotFoundError, match="no route to host"):
        data.load("mnist", root=tmp_path / "offline")


def test_corrupt_idx_file_is_named(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_idx_dataset(raw, seed=6)
    (raw / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        data.load("mnist", root=tmp_path, download=False)


# ---------------------------------------------------------------- CIFAR-10


def write_cifar10(root: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    """The official layout: five training batches of 2 images and a test batch of 3, as pickled dicts."""
    rng = np.random.default_rng(7)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name, count in [(f"data_batch_{i}", 2) for i in range(1, 6)] + [("test_batch", 3)]:
        pixels = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, count).tolist()
        with open(folder / name, "wb") as file:
            pickle.dump({b"data": pixels, b"labels": labels, b"batch_label": name.encode()}, file)
        batches[name] = (pixels, labels)
    return batches


def test_cifar10_batches_are_reshaped_channel_major(tmp_path):
    batches = write_cifar10(tmp_path)
    images, labels = data.load("cifar10", root=tmp_path, download=False)
    assert images.shape == (10, 3, 32, 32) and images.dtype == torch.float32
    assert labels.tolist() == sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    # A row holds the red plane, then green, then blue, each row by row: green (1), row 5, column 7.
    first_of_batch_3 = batches["data_batch_3"][0][0]
    assert images[4, 1, 5, 7] == first_of_batch_3[1024 + 5 * 32 + 7] / 255
    assert torch.equal(images[9], torch.from_numpy(batches["data_batch_5"][0][1]).float().reshape(3, 32, 32) / 255)

    test_images, test_labels = data.load("cifar10", "test", root=tmp_path, download=False, limit=2)
    assert test_images.shape == (2, 3, 32, 32) and test_labels.tolist() == batches["test_batch"][1][:2]
    assert test_images[1, 2, 31, 0] == batches["test_batch"][0][1][2048 + 31 * 32] / 255


def test_corrupt_cifar10_batch_is_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="data_batch_2"):
        data.load("cifar10", root=tmp_path, download=False)
    assert len(data.load("cifar10", "test", root=tmp_path, download=False).images) == 3


# ---------------------------------------------------------------- CelebA

# Written on purpose in no particular order: the loader must sort. Three train, two valid, one test.
CELEBA_PARTITION = [("000004.jpg", 0), ("000001.jpg", 0), ("000006.jpg", 1), ("000002.jpg", 1),
                    ("000005.jpg", 2), ("000003.jpg", 0)]


def face_colour(number: int) -> list[int]:
    return [40 * number, 100, 200]


def attribute_bits(number: int) -> list[int]:
    return [int((number + j) % 3 == 0) for j in range(40)]


def write_celeba(root: Path, attributes: bool = True) -> Path:
    """Aligned 178x218 images, constant colour inside the crop and white outside it.

    They are PNG bytes behind the official .jpg names: the decoder goes by content,
    and PNG is lossless, so the crop can be checked exactly.
    """
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    for name, _ in CELEBA_PARTITION:
        number = int(name[:6])
        image = torch.full((3, 218, 178), 255, dtype=torch.uint8)
        image[:, 45:173, 25:153] = torch.tensor(face_colour(number), dtype=torch.uint8)[:, None, None]
        write_png(image, folder / "img_align_celeba" / name)
    (folder / "list_eval_partition.txt").write_text("".join(f"{name} {part}\n" for name, part in CELEBA_PARTITION))
    if attributes:
        lines = [str(len(CELEBA_PARTITION)), " ".join(f"Attribute_{j}" for j in range(40))]
        for name, _ in CELEBA_PARTITION:  # the official file pads with double spaces
            lines.append(name + " " + "  ".join("1" if bit else "-1" for bit in attribute_bits(int(name[:6]))))
        (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return folder


def write_png(image: torch.Tensor, path: Path) -> None:
    """PNG bytes under whatever name: the decoder goes by content."""
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path, format="PNG")


def expected_faces(numbers: list[int]) -> torch.Tensor:
    return torch.tensor([face_colour(n) for n in numbers]).float()[:, :, None, None].expand(-1, 3, 64, 64) / 255


def test_celeba_splits_order_crop_and_attributes(tmp_path):
    write_celeba(tmp_path)
    for split, numbers in [("train", [1, 3, 4]), ("valid", [2, 6]), ("test", [5])]:
        images, labels = data.load("celeba", split, root=tmp_path, download=False)
        assert images.shape == (len(numbers), 3, 64, 64) and images.dtype == torch.float32
        # Exactly the face colour everywhere: a crop one pixel off would blend in the white frame.
        assert torch.equal(images, expected_faces(numbers))
        assert labels.dtype == torch.int64 and labels.tolist() == [attribute_bits(n) for n in numbers]


def test_celeba_without_attribute_file_has_empty_labels(tmp_path):
    write_celeba(tmp_path, attributes=False)
    images, labels = data.load("celeba", "valid", root=tmp_path, download=False)
    assert images.shape == (2, 3, 64, 64) and labels.shape == (2, 0) and labels.dtype == torch.int64


def test_celeba_cache_is_written_reused_and_invalidated(tmp_path, monkeypatch):
    folder = write_celeba(tmp_path)
    cache = folder / "celeba64_train.pt"
    first = data.load("celeba", root=tmp_path, download=False)
    assert cache.is_file() and not list(folder.glob("*.partial"))

    def no_decoding(path):
        raise AssertionError(f"decoded {path} although the cache is valid")

    with monkeypatch.context() as patch:
        patch.setattr(data, "_read_celeba64", no_decoding)
        again = data.load("celeba", root=tmp_path, download=False)
        assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
        assert torch.equal(data.load("celeba", root=tmp_path, download=False, limit=1).images, first.images[:1])

    (folder / "img_align_celeba" / "000003.jpg").unlink()  # the folder changed: the cache must not be served
    images, labels = data.load("celeba", root=tmp_path, download=False)
    assert torch.equal(images, expected_faces([1, 4]))
    assert labels.tolist() == [attribute_bits(1), attribute_bits(4)]
    assert torch.load(cache, weights_only=True)["images"].shape[0] == 2


def test_celeba_limit_without_cache_decodes_only_what_is_asked(tmp_path):
    folder = write_celeba(tmp_path)
    images, _ = data.load("celeba", root=tmp_path, download=False, limit=2)
    assert torch.equal(images, expected_faces([1, 3]))
    assert not (folder / "celeba64_train.pt").exists()  # a partial split is never cached as the whole


def test_celeba_bad_images_are_named(tmp_path):
    folder = write_celeba(tmp_path)
    write_png(torch.zeros(3, 64, 64, dtype=torch.uint8), folder / "img_align_celeba" / "000005.jpg")
    with pytest.raises(ValueError, match="000005.jpg.*178x218"):
        data.load("celeba", "test", root=tmp_path, download=False)
    (folder / "img_align_celeba" / "000002.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(ValueError, match="000002.jpg"):
        data.load("celeba", "valid", root=tmp_path, download=False)


# ---------------------------------------------------------------- digits


def test_digits_split_shapes_and_range():
    from sklearn.datasets import load_digits

    train, test = data.load("digits"), data.load("digits", "test")
    assert train.images.shape == (1437, 1, 8, 8) and test.images.shape == (360, 1, 8, 8)
    assert len(train.labels) + len(test.labels) == 1797
    assert train.images.min() == 0 and train.images.max() == 1
    digits = load_digits()
    assert torch.equal(test.images[0, 0], torch.from_numpy(digits.images[1437]).float() / 16)
    assert test.labels.tolist() == digits.target[1437:].tolist()


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("name, hint", [
    ("mnist", "download=True"),
    ("fashion-mnist", "dataset-fashion-mnist"),
    ("cifar10", "cifar-10-python.tar.gz"),
    ("celeba", "list_eval_partition.txt"),
])
def test_missing_dataset_offline_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch, name, hint):
    empty_system_dir = tmp_path / "empty-system-dir"
    empty_system_dir.mkdir()
    monkeypatch.setitem(data.SYSTEM_DIRS, name, [empty_system_dir])
    root = tmp_path / "root"
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load(name, root=root, download=False)
    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    assert str(root) in message and hint in message and "VAELAB_DATA" in message and "download=False" in message
    if name in ("mnist", "fashion-mnist"):
        assert str(empty_system_dir) in message


def test_bad_arguments_are_value_errors_that_list_the_choices(tmp_path):
    with pytest.raises(ValueError, match="fashion-mnist"):
        data.load("imagenet")
    with pytest.raises(ValueError, match="valid"):
        data.load("celeba", "dev", root=tmp_path)
    with pytest.raises(ValueError, match="train, test"):
        data.load("digits", "valid")
    write_cifar10(tmp_path)
    with pytest.raises(ValueError, match="28x28"):
        data.load("cifar10", root=tmp_path, pad_to_32=True, download=False)


# ---------------------------------------------------------------- where the data lives


def test_data_root_precedence(tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    (checkout / "vaelab").mkdir(parents=True)
    (checkout / "data").mkdir()
    monkeypatch.setattr(data, "__file__", str(checkout / "vaelab" / "data.py"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where platformdirs puts Linux user caches

    # data/ without pyproject.toml is not a source checkout: an installed vaelab uses the user cache folder,
    # never ./data of whatever folder the kernel started in
    assert data.data_root() == Path(platformdirs.user_cache_dir("vaelab"))
    if sys.platform.startswith("linux"):
        assert data.data_root() == tmp_path / "cache" / "vaelab"
    (checkout / "pyproject.toml").write_text("[project]\nname = 'vaelab'\n")
    assert data.data_root() == checkout / "data"
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "elsewhere"))
    assert data.data_root() == tmp_path / "elsewhere"


def test_load_uses_vaelab_data_by_default(tmp_path, monkeypatch):
    arrays = write_idx_dataset(tmp_path / "MNIST" / "raw", seed=8)
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    assert torch.equal(data.load("mnist", "test", download=False).images, as_float(arrays["t10k-images-idx3-ubyte"]))


# ---------------------------------------------------------------- the real data, where installed


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(),
                    reason=f"{DEBIAN_FASHION_MNIST} absent (Debian package dataset-fashion-mnist not installed)")
def test_real_debian_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.setitem(data.SYSTEM_DIRS, "fashion-mnist", [DEBIAN_FASHION_MNIST])
    images, labels = data.load("fashion-mnist", "test", root=tmp_path, limit=100, download=False)
    assert images.shape == (100, 1, 28, 28) and images.dtype == torch.float32
    assert 0 <= images.min() < images.max() <= 1
    assert labels.min() >= 0 and labels.max() <= 9 and len(labels.unique()) > 1
    train = data.load("fashion-mnist", root=tmp_path, download=False)
    assert train.images.shape == (60000, 1, 28, 28) and torch.bincount(train.labels).tolist() == [6000] * 10


# ---------------------------------------------------------------- safety: untrusted files, parallel loads, hangs


def test_a_crafted_cifar10_batch_cannot_run_code(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Exploit(), b"labels": [0]}, f)
    with pytest.raises(ValueError, match="refusing to load"):
        data.load("cifar10", "train", root=tmp_path, download=False)
    assert not marker.exists()


def test_parallel_first_loads_unpack_without_corrupting(tmp_path, monkeypatch):
    system = tmp_path / "system"
    arrays = write_idx_dataset(system, seed=3, compress=True, n_train=20_000)  # large enough for writes to overlap
    monkeypatch.setitem(data.SYSTEM_DIRS, "mnist", [system])
    script = (f"import pathlib, torch; from vaelab import data; data.SYSTEM_DIRS['mnist'] = [pathlib.Path({str(system)!r})]\n"
              f"x = data.load('mnist', 'train', root={str(tmp_path / 'root')!r}, download=False).images\n"
              f"torch.save(x, {str(tmp_path)!r} + f'/out{{__import__(\"os\").getpid()}}.pt')")
    processes = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(3)]
    assert all(p.wait(timeout=120) == 0 for p in processes)
    expected = as_float(arrays["train-images-idx3-ubyte"])
    outputs = list(tmp_path.glob("out*.pt"))
    assert len(outputs) == 3 and all(torch.equal(torch.load(o), expected) for o in outputs)
    assert not list((tmp_path / "root").rglob("*.partial"))


def test_a_server_that_never_answers_does_not_hang_a_download(tmp_path, monkeypatch):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (the kernel does), never reads or answers
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(proxy, f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setattr(data, "DOWNLOAD_TIMEOUT", 1.0)
    monkeypatch.setattr(data, "SYSTEM_DIRS", {})
    start = time.monotonic()
    with pytest.raises(data.DatasetNotFoundError):
        data.load("mnist", "test", root=tmp_path)
    assert time.monotonic() - start < 60  # torchvision tries several mirrors and files, each gives up after 1 s
    silent.close()


# ---------------------------------------------------------------- stand-ins and CelebA's zip


def test_standins_load_through_the_real_loaders(tmp_path, monkeypatch):
    written = standins.write_standins(tmp_path, images=6)
    assert set(written) == {"mnist", "cifar10", "celeba", "inception"}
    mnist = data.load("mnist", "test", root=tmp_path, download=False)
    assert mnist.images.shape == (6, 1, 28, 28) and mnist.labels.max() <= 9
    cifar = data.load("cifar10", root=tmp_path, download=False)
    assert cifar.images.shape == (5 * 2, 3, 32, 32) and len(data.load("cifar10", "test", root=tmp_path,
                                                                       download=False).images) == 6
    # CelebA from its zip, as downloaded: extracted on first use, then read as the aligned images
    for split in ("train", "valid", "test"):
        images, labels = data.load("celeba", split, root=tmp_path, download=False)
        assert images.shape == (6, 3, 64, 64) and labels.shape == (6, 40)
    assert (tmp_path / "celeba" / "img_align_celeba" / "000001.jpg").is_file()
    assert not list((tmp_path / "celeba").glob("*.partial"))
    # the FID network reads the random weights where torch.hub keeps them
    from vaelab.metrics.inception import InceptionFeatures
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    features = InceptionFeatures(device="cpu")
    assert features(torch.rand(2, 3, 32, 32)).shape == (2, 2048)


def test_a_celeba_zip_that_is_a_quota_page_says_what_to_do(tmp_path):
    folder = tmp_path / "celeba"
    folder.mkdir()
    (folder / "img_align_celeba.zip").write_text("<html>Google Drive - Quota exceeded</html>")
    (folder / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.load("celeba", root=tmp_path, download=False)
    message = str(error.value)
    assert "BadZipFile" in message and "Delete it" in message and "by hand" in message
    assert str(folder) in message and "mmlab.ie.cuhk.edu.hk" in message
    assert not (folder / "img_align_celeba").exists() and not list(folder.glob("*.partial"))
