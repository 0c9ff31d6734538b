"""Measures of a network or of its images that chapters 4 and 6 set beside the papers' numbers: parameters as Keras
counts them (both papers' code is Keras), and the share of an image's or a mask's spectral energy at high
frequencies (the Split-VAE paper's "syntactic" masks; the texture of a decoder's output).
"""
import torch
from torch import Tensor, nn


def keras_parameter_count(model: nn.Module, convention: str = "total") -> int:
    """Parameters as Keras counts them, to compare with the papers. "trainable": the weights (PyTorch's
    parameters); "total": Keras also counts BatchNorm's moving mean and variance (non-trainable weights, two per
    normalised channel), which PyTorch keeps as buffers."""
    if convention not in ("trainable", "total"):
        raise ValueError(f"convention must be 'trainable' or 'total', got {convention!r}")
    trainable = sum(p.numel() for p in model.parameters())
    if convention == "trainable":
        return trainable
    batch_norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return trainable + sum(2 * m.num_features for m in batch_norms)


def high_frequency_share(maps: Tensor, cutoff: float = 0.25) -> Tensor:
    r"""Share of each map's spectral energy above the radial frequency `cutoff` (cycles per pixel), per image.

        share = sum_{|f| > cutoff} |F(w (s - mean s))|^2  /  sum_f |F(w (s - mean s))|^2

    F is the 2-D discrete Fourier transform and w a 2-D Hann window. The Nyquist frequency is 0.5 cycles per pixel
    along each axis, so a pixel checkerboard sits at |f| = 0.71 and a pattern with a period of 4 pixels at
    |f| = 0.25. A "syntactic" sigma map (complementary high-frequency sub-images) has a large share above the
    cutoff, larger than the images it splits; a "semantic" one (shapes, contours) has little. A constant map has
    no energy and gets share 0.
    """
    height, width = maps.shape[-2:]
    # The DFT sees the map as periodic: without the window, a map that differs between opposite borders, or has
    # a bright frame, would show a jump there, that is high frequencies that are not part of its pattern.
    window = torch.outer(*(torch.hann_window(n, periodic=False, dtype=maps.dtype, device=maps.device)
                           for n in (height, width)))
    centred = maps - maps.mean(dim=(-2, -1), keepdim=True)  # drop the mean: only the pattern counts
    power = torch.fft.fft2(centred * window).abs() ** 2
    fy, fx = torch.fft.fftfreq(height, device=maps.device), torch.fft.fftfreq(width, device=maps.device)
    radius = (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt()
    total = power.flatten(-2).sum(-1)
    high = power[..., radius > cutoff].sum(-1)
    share = torch.where(total > 0, high / total.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(total))
    return share.flatten(1).mean(-1)  # average over channels (sigma has one)
