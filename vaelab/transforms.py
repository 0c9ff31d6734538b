"""Deterministic, discrete transformations y = d(x) of the self-supervised VAE (Gatopoulos & Tomczak 2020, §3.1 and
Appendix A.1).

The paper's variational posterior over y is a point mass, q(y|x) = delta(y - d(x)), so E_q[log q(y|x)] = 0 and
the ELBO needs no entropy term for y. That only holds if y is *discrete*: every transform here returns an 8-bit
image (values k/255), so p(y|u) can be the same discretized likelihood as p(x|...).

    downscale   halve height and width (the antialiased bilinear filter of PIL's Resize in the srVAE code,
                rounded once where PIL rounds twice); stackable: 28 -> 14 -> 7 gives the 3-level model's y_2 and y_1
    sketch      a pencil sketch, the colour dodge of the grey image with its blurred inverse; one channel at the
                image's own size; a sketch of a sketch is not a sketch, so it is applied once

`pyramid(x, transforms)` applies a chain and returns every level, smallest first, ending with x itself.
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2.functional import gaussian_blur

from .images import check_images

LEVELS = 255  # 8-bit images take the values k / 255, k = 0..255
TRANSFORMS = ("downscale", "sketch")
SKETCH_SIGMA = 1.0  # the paper does not give the blur: our choice, a Gaussian of 1 pixel, 7x7 kernel
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, what PIL's convert("L") uses


def quantize(x: Tensor) -> Tensor:
    """Round values in [0,1] to the nearest of the 256 levels k/255."""
    return torch.round(x.clamp(0, 1) * LEVELS) / LEVELS


def is_8bit(x: Tensor, tolerance: float = 1e-4) -> bool:
    """True when every value is within `tolerance` (in units of one level) of a level k/255 in [0,1]."""
    scaled = x * LEVELS
    return bool(x.min() >= 0 and x.max() <= 1 and (scaled - scaled.round()).abs().max() <= tolerance)


def downscale(x: Tensor) -> Tensor:
    """y = d(x): height and width halved, re-quantised to 8 bits.

    Each output pixel is the exact weighted mean of its 4x4 neighbourhood, weights (1,3,3,1)/8 per axis (the
    antialiased bilinear filter at a factor of 2; at the border the weights outside the image are dropped and the
    rest renormalised), computed in floating point and rounded once to the nearest level k/255.

    The srVAE code shrinks with PIL's bilinear Resize: the same filter, but applied one axis at a time, rounding to
    8 bits after each of its two passes. The two y's therefore differ by at most one level, and often by one: on 478
    CIFAR-10 images 15.6 % of the values do, on 478 Fashion-MNIST test images 10.2 %. vaelab's y is the nearer to
    the exact mean (within half a level; Pillow's drifts up to about one). The ELBO's bound holds either way: y only
    has to be a deterministic 8-bit function of x (tests/test_transforms.py compares the two).
    """
    check_images(x, name="x")
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(f"downscale halves height and width, which must be even; got {tuple(x.shape[-2:])}")
    half = F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True, align_corners=False)
    return quantize(half)


def grey(x: Tensor) -> Tensor:
    """One channel: the image itself if grey, its luma if RGB."""
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"grey needs 1 or 3 channels, got {x.shape[1]}")
    return (x * x.new_tensor(GREY_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)


def sketch(x: Tensor, sigma: float = SKETCH_SIGMA, invert: bool = False) -> Tensor:
    r"""A pencil sketch by colour dodge (eq-sketch; the paper's Appendix A.1): with the grey image g in [0, 255] and b
    its blurred inverse,

        b = GaussianBlur_sigma(255 - g),        s = min(255, 256 g / (255 - b)),        y = round(s) / 255.

    Where the image is flat, b = 255 - g and s saturates to white; only pixels darker than their neighbourhood
    (edges, texture) stay dark. invert: dodge the negative 1 - x instead, for light objects on a dark background
    (Fashion-MNIST), so that their outlines come out as dark lines on white as in the paper's CelebA sketches.
    """
    check_images(x, name="x")
    g = grey(1 - x if invert else x) * LEVELS
    radius = math.ceil(3 * sigma)
    b = gaussian_blur(LEVELS - g, [2 * radius + 1] * 2, [sigma] * 2)  # reflect padding at the borders
    s = (256 * g / (LEVELS - b).clamp(min=1e-3)).clamp(max=LEVELS)  # 255 - b = 0 only where g = 0: s = 0
    return torch.round(s) / LEVELS


def apply(name: str, x: Tensor, sketch_invert: bool = False) -> Tensor:
    if name == "downscale":
        return downscale(x)
    if name == "sketch":
        return sketch(x, invert=sketch_invert)
    raise ValueError(f"unknown transform {name!r}; the transforms are {TRANSFORMS}")


def check_chain(transforms: tuple[str, ...]) -> None:
    """A chain is valid when every name is known and the sketch, if any, is used once."""
    for name in transforms:
        if name not in TRANSFORMS:
            raise ValueError(f"unknown transform {name!r}; the transforms are {TRANSFORMS}")
    if transforms.count("sketch") > 1:
        raise ValueError("the sketch can be applied only once: the sketch of a sketch is mostly white")


def level_shapes(shape: tuple[int, int, int], transforms: tuple[str, ...]) -> list[tuple[int, int, int]]:
    """The C x H x W of every level of `pyramid`, smallest first, without computing any image."""
    check_chain(transforms)
    shapes = [tuple(shape)]
    for name in transforms:
        c, h, w = shapes[-1]
        shapes.append((c, h // 2, w // 2) if name == "downscale" else (1, h, w))
    return shapes[::-1]


def pyramid(x: Tensor, transforms: tuple[str, ...], sketch_invert: bool = False) -> list[Tensor]:
    """[y_1, ..., y_K, x]: transforms[0] is applied to x, giving y_K, transforms[1] to y_K, and so on.

    For the 3-level model on 28x28 images, pyramid(x, ("downscale", "downscale")) = [7x7, 14x14, 28x28].
    """
    check_chain(transforms)
    levels = [x]
    for name in transforms:
        levels.append(apply(name, levels[-1], sketch_invert))
    return levels[::-1]
