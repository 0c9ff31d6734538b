"""TensorFlow's convolution with 'same' padding written from its definition, the reference that the layers which
follow Keras (the Split-VAE's and Rivera's) are tested against."""
import torch


def tensorflow_same_conv(x, weight, stride=2):
    """Conv2D 'same' written from TensorFlow's definition, one output pixel at a time: output (i, j) reads
    inputs stride*i + a - top, stride*j + b - left with top = floor(total padding / 2), zeros outside."""
    k, size = weight.shape[-1], x.shape[-1]
    out_size = -(-size // stride)
    top = max((out_size - 1) * stride + k - size, 0) // 2
    out = torch.zeros(x.shape[0], weight.shape[0], out_size, out_size, dtype=x.dtype)
    for i in range(out_size):
        for j in range(out_size):
            for a in range(k):
                for b in range(k):
                    r, c = stride * i + a - top, stride * j + b - top
                    if 0 <= r < size and 0 <= c < size:
                        out[:, :, i, j] += x[:, :, r, c] @ weight[:, :, a, b].T
    return out
