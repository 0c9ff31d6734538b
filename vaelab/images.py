"""What every vaelab image is, checked in one place: a float tensor N x C x H x W with values in [0,1].

A model checks what it can see without reading the values (`check_image_batch`: type, shape, dtype), because
reading them would make a GPU wait at every step; an objective reads the values of its first batch
(`check_unit_range`); training and the metrics check everything once, where a user hands images in (`check_images`).
"""
import torch
from torch import Tensor


def check_image_batch(images, *, shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None,
                      name: str = "images") -> None:
    """A torch float tensor N x C x H x W, of C x H x W = `shape` and of `dtype` where they are given."""
    if not isinstance(images, Tensor):
        hint = " (torch.from_numpy(array) converts a numpy array)" if hasattr(images, "__array__") else ""
        raise ValueError(f"{name} must be a torch tensor N x C x H x W, got {type(images).__name__}{hint}")
    if images.dim() != 4 or (shape is not None and tuple(images.shape[1:]) != tuple(shape)):
        expected = " x ".join(map(str, shape)) if shape is not None else "C x H x W"
        raise ValueError(f"{name} must be a tensor N x {expected}, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be float32 in [0,1], got dtype {images.dtype} "
                         f"(images.float() / 255 converts 8-bit images)")
    if dtype is not None and images.dtype != dtype:
        raise ValueError(f"{name} are {images.dtype} but {dtype} is needed here ({name}.to({dtype}) converts them)")


def check_unit_range(images: Tensor, name: str = "images") -> None:
    """Every value in [0,1]: 8-bit images (0..255) would make every likelihood and metric meaningless."""
    if images.numel() == 0:
        return
    low, high = torch.aminmax(images.detach())
    if not (low >= 0 and high <= 1):  # written so that NaN, which compares False with everything, fails too
        if images.isnan().any():
            raise ValueError(f"{name} hold NaN values: images must lie in [0,1]")
        raise ValueError(f"{name} must lie in [0,1], found values in [{float(low):.3g}, {float(high):.3g}]"
                         + (" (8-bit images? divide by 255)" if high > 1.5 else ""))


def check_images(images, *, shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None,
                 name: str = "images") -> None:
    """All of it: a non-empty float tensor N x C x H x W (of `shape` and `dtype` where given) in [0,1]."""
    check_image_batch(images, shape=shape, dtype=dtype, name=name)
    if len(images) == 0:
        raise ValueError(f"{name} is empty: there are no images")
    check_unit_range(images, name)
