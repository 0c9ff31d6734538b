import numpy as np
import pytest
import torch

from vaelab import transforms


def eight_bit(shape, seed=0):
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed)).float() / 255


def test_downscale_halves_and_stays_8bit():
    x = eight_bit((3, 3, 28, 28))
    y = transforms.downscale(x)
    assert y.shape == (3, 3, 14, 14)
    assert transforms.is_8bit(y)
    assert transforms.is_8bit(transforms.downscale(y)) and transforms.downscale(y).shape[-1] == 7


def test_downscale_is_the_antialiased_4x4_average():
    """Independent computation: each output pixel is the (1,3,3,1)/8 x (1,3,3,1)/8 weighted mean of its 4x4
    neighbourhood (PIL's bilinear filter at a factor of 2), with the image border clamped."""
    x = eight_bit((1, 1, 8, 8), seed=1)
    weights = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")[0, 0]
    expected = torch.empty(4, 4)
    for i in range(4):
        for j in range(4):
            expected[i, j] = weights @ padded[2 * i:2 * i + 4, 2 * j:2 * j + 4] @ weights
    # replicate padding differs from PIL's renormalised border weights only at the border; compare the inside
    assert torch.allclose(transforms.downscale(x)[0, 0, 1:-1, 1:-1], transforms.quantize(expected)[1:-1, 1:-1],
                          atol=1.5 / 255)



def exact_half(x: torch.Tensor) -> torch.Tensor:
    """The antialiased bilinear filter at a factor of 2 in float64, not rounded: the (1,3,3,1)/8 x (1,3,3,1)/8
    weighted mean of each 4x4 neighbourhood, the weights outside the image dropped and the rest renormalised (what
    Pillow and torch do at the border)."""
    weights = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64) / 8
    kernel = torch.outer(weights, weights).view(1, 1, 4, 4)
    flat = x.double().flatten(0, 1).unsqueeze(1)
    total = torch.nn.functional.conv2d(flat, kernel, stride=2, padding=1)
    inside = torch.nn.functional.conv2d(torch.ones_like(flat[:1]), kernel, stride=2, padding=1)
    return (total / inside).view(*x.shape[:2], *total.shape[-2:])


@pytest.mark.parametrize("shape", [(6, 3, 32, 32), (6, 1, 28, 28)], ids=["rgb", "grey"])
def test_downscale_rounds_once_where_pillow_rounds_after_each_pass(shape):
    """The srVAE code shrinks with Pillow's bilinear resize: the same filter, applied one axis at a time and rounded
    to 8 bits after each pass. vaelab rounds once, so the two differ by at most one level, and vaelab's y is the
    nearer to the exact (unrounded) average."""
    from PIL import Image

    def pillow_half(image: np.ndarray) -> np.ndarray:  # H x W x C, uint8
        picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        half = picture.resize((picture.width // 2, picture.height // 2), Image.Resampling.BILINEAR)
        return np.array(half).reshape(half.height, half.width, -1)

    x = eight_bit(shape, seed=2)
    pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    pillow = torch.from_numpy(np.stack([pillow_half(image) for image in pixels])).permute(0, 3, 1, 2).double()
    ours = (transforms.downscale(x) * 255).round().double()
    exact = exact_half(x) * 255
    assert (ours - exact).abs().max() <= 0.5 + 1e-4  # one rounding of the exact average (float32 ties)
    assert (ours - pillow).abs().max() == 1  # never more than one level apart ...
    assert 0.05 < (ours != pillow).double().mean() < 0.3  # ... and often one (15.6 % on real CIFAR-10 images)
    assert (ours - exact).abs().mean() < (pillow - exact).abs().mean()  # Pillow's two roundings drift further

def test_sketch_is_one_8bit_channel_with_white_flat_regions():
    x = eight_bit((2, 3, 16, 16))
    s = transforms.sketch(x)
    assert s.shape == (2, 1, 16, 16) and transforms.is_8bit(s)
    flat = torch.full((1, 1, 16, 16), 100 / 255)
    assert torch.all(transforms.sketch(flat) == 1.0)  # colour dodge of a flat image: 256 g / g saturates


def test_sketch_matches_the_colour_dodge_formula():
    x = eight_bit((1, 1, 12, 12), seed=3)
    g = x * 255
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(255 - g, (3, 3, 3, 3), mode="reflect"),
                                         _gaussian_kernel(1.0, 3))
    expected = torch.round((256 * g / (255 - blurred).clamp(min=1e-3)).clamp(max=255)) / 255
    assert torch.allclose(transforms.sketch(x), expected, atol=1 / 255 + 1e-6)


def _gaussian_kernel(sigma, radius):
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = k / k.sum()
    return (k[:, None] * k[None, :])[None, None]


def test_pyramid_orders_levels_smallest_first_and_shapes_agree():
    x = eight_bit((2, 1, 28, 28))
    levels = transforms.pyramid(x, ("downscale", "downscale"))
    assert [tuple(level.shape[1:]) for level in levels] == transforms.level_shapes((1, 28, 28), ("downscale",) * 2)
    assert [level.shape[-1] for level in levels] == [7, 14, 28] and levels[-1] is x
    assert transforms.level_shapes((3, 32, 32), ("sketch",)) == [(1, 32, 32), (3, 32, 32)]


def test_clear_errors():
    with pytest.raises(ValueError, match="even"):
        transforms.downscale(eight_bit((1, 1, 7, 7)))
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        transforms.downscale(torch.full((1, 1, 4, 4), 2.0))
    with pytest.raises(ValueError, match="NaN"):
        transforms.sketch(torch.full((1, 1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="N x C x H x W"):
        transforms.sketch(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="only once"):
        transforms.pyramid(eight_bit((1, 1, 8, 8)), ("sketch", "sketch"))
    with pytest.raises(ValueError, match="unknown transform"):
        transforms.pyramid(eight_bit((1, 1, 8, 8)), ("blur",))
