"""FID: the Frechet distance in the pool features of pytorch-fid's InceptionV3."""
import os
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from pytorch_fid.inception import FID_WEIGHTS_URL, FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2
from torch import Tensor, nn

from .. import data
from ..data import fid_weights_path
from ..runtime import pick_device
from .frechet import FeatureExtractor, weights_digest


class FIDWeightsUnavailableError(FileNotFoundError):
    """The FID Inception weights are not on disk and could not be downloaded."""


def _weights_unavailable(problem: str) -> FIDWeightsUnavailableError:
    return FIDWeightsUnavailableError(
        f"{problem}\nThe FID Inception weights (TensorFlow's 2015-12-05 graph, ported by pytorch-fid) are needed. "
        f"On a machine with internet access download\n  {FID_WEIGHTS_URL}\nand either put the file at\n  "
        f"{fid_weights_path()}\n(the torch.hub cache; set TORCH_HOME to move it) or pass its path as "
        f"InceptionFeatures(weights_path=...).")


class InceptionFeatures(FeatureExtractor):
    """The 2048-d pool features of pytorch-fid's InceptionV3 (the Frechet distance in them is the FID), of images
    resized to 299x299 and mapped to [-1, 1] as pytorch-fid does. weights_path: a local copy of the weights; None:
    the torch.hub cache, downloading into it when the file is missing."""

    dim = 2048

    def __init__(self, weights_path: str | os.PathLike | None = None, device: str | torch.device | None = None):
        super().__init__()
        if weights_path is not None:
            path = Path(weights_path)
            if not path.is_file():
                raise _weights_unavailable(f"weights_path={str(path)!r} is not a file.")
        else:
            path = fid_weights_path()
            if not path.is_file():
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with data.network_timeout():
                        torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(path))  # a temp file, then renamed
                except OSError as error:  # no network, DNS, proxy, HTTP and disk errors all land here
                    raise _weights_unavailable(f"{path} is missing and downloading it failed: {error}") from error
        try:
            weights = torch.load(path, map_location="cpu", weights_only=True)
            self.net = fid_inception(weights)
        except Exception as error:  # truncated, corrupt, or another network's weights: say which file
            raise _weights_unavailable(f"{path} is not a readable copy of the FID weights ({error}); delete it "
                                       f"(it is downloaded again when online) or replace it.") from error
        self.name = f"inception-fid-{weights_digest(self.net)}"
        self.to(device or pick_device())

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grey -> RGB, as PIL's convert("RGB") does for pytorch-fid's image files
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(2 * x - 1)


def fid_inception(state_dict: dict) -> nn.Sequential:
    """pytorch-fid's FID InceptionV3 up to its 2048-d average pool, built without downloading anything: torchvision's
    InceptionV3 with pytorch-fid's TensorFlow-compatible blocks in place of nine of its own (their average pools
    ignore the zero padding; the last block max-pools)."""
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = FIDInceptionA(192, 32), FIDInceptionA(256, 64), FIDInceptionA(288, 64)
    net.Mixed_6b, net.Mixed_6c = FIDInceptionC(768, 128), FIDInceptionC(768, 160)
    net.Mixed_6d, net.Mixed_6e = FIDInceptionC(768, 160), FIDInceptionC(768, 192)
    net.Mixed_7b, net.Mixed_7c = FIDInceptionE_1(1280), FIDInceptionE_2(2048)
    net.load_state_dict(state_dict)
    return nn.Sequential(
        net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, nn.MaxPool2d(3, stride=2),
        net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, nn.MaxPool2d(3, stride=2),
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d,
        net.Mixed_6e, net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ).requires_grad_(False)


