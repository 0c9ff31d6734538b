"""Offline: the Frechet distance in the features of a small classifier trained once on the data set (not FID)."""
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import data
from ..checkpoint import CheckpointError, save_checkpoint
from ..runtime import pick_device, seed_everything
from .frechet import FeatureExtractor, weights_digest


class SmallClassifier(nn.Module):
    """A 28x28 grey image -> class logits. `features` ends in the penultimate layer the Frechet distance uses."""

    def __init__(self, num_classes: int = 10, feature_dim: int = 128):
        super().__init__()
        self.feature_dim = feature_dim
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16 x 14 x 14
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 7 x 7
            nn.Flatten(), nn.Linear(32 * 7 * 7, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def train_classifier(images: Tensor, labels: Tensor, *, epochs: int = 3, batch_size: int = 128, lr: float = 1e-3,
                     seed: int = 0, device: str | torch.device | None = None) -> SmallClassifier:
    """Cross-entropy training with Adam: a few epochs suffice for the features to separate the classes."""
    seed_everything(seed)
    device = torch.device(device) if device else pick_device()
    net = SmallClassifier(num_classes=int(labels.max()) + 1).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(images)).split(batch_size):
            loss = F.cross_entropy(net(images[batch].to(device)), labels[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return net.eval()


@torch.no_grad()
def classifier_accuracy(net: SmallClassifier, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    device = next(net.parameters()).device
    net.eval()
    predictions = torch.cat([net(batch.to(device)).argmax(1).cpu() for batch in images.split(batch_size)])
    return (predictions == labels).float().mean().item()


class ClassifierFeatures(FeatureExtractor):
    """Penultimate features of a SmallClassifier trained on a 28x28 dataset's labels. The Frechet distance in them
    measures sample quality offline and in seconds, but it is *not* the FID: its values compare only with each
    other. 32x32 inputs (zero-padded 28x28 images) are cropped back to their central 28x28."""

    def __init__(self, classifier: SmallClassifier, dataset: str, test_accuracy: float):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.dim = classifier.feature_dim
        self.name = f"{dataset}-classifier-{weights_digest(classifier)}"
        self.test_accuracy = test_accuracy

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] == (32, 32):
            x = x[..., 2:30, 2:30]
        if x.shape[1:] != (1, 28, 28):
            raise ValueError(f"the classifier reads 1 x 28 x 28 (or padded 1 x 32 x 32) images, got {tuple(x.shape)}")
        return self.classifier.features(x)


def classifier_features(dataset: str = "fashion-mnist", *, train_limit: int = 10_000, epochs: int = 2, seed: int = 0,
                        cache_dir: str | os.PathLike | None = None,
                        device: str | torch.device | None = None) -> ClassifierFeatures:
    """The offline feature extractor of `dataset`: trained on its first train_limit training images once, then
    loaded from <data root>/classifiers/."""
    cache_dir = Path(cache_dir) if cache_dir is not None else data.data_root() / "classifiers"
    path = cache_dir / f"{dataset}_n{train_limit}_e{epochs}_s{seed}.pt"
    device = torch.device(device) if device else pick_device()
    if path.is_file():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            net = SmallClassifier(num_classes=payload["num_classes"])
            net.load_state_dict(payload["state_dict"])
        except Exception as error:  # truncated file, old format, other shapes: the same advice for each
            raise CheckpointError(f"could not load the classifier {path} ({error!r}); delete it to retrain") from error
        return ClassifierFeatures(net.to(device), dataset, payload["test_accuracy"])
    train = data.load(dataset, "train", limit=train_limit)
    net = train_classifier(train.images, train.labels, epochs=epochs, seed=seed, device=device)
    test = data.load(dataset, "test")
    accuracy = classifier_accuracy(net, test.images, test.labels)
    save_checkpoint(path, {"state_dict": net.state_dict(), "num_classes": net.head.out_features,
                           "test_accuracy": accuracy})
    return ClassifierFeatures(net, dataset, accuracy)


