"""The five ways a trained self-supervised VAE makes an image (Gatopoulos & Tomczak 2020, §3.3 and Fig. 3), each with
what a sender must transmit for the receiver to make the same image, and how many bits that costs.

    mode                          chain (K = 1; deeper models repeat the z step per level)        sent
    generation                    u ~ p(u) -> y ~ p(y|u) -> z ~ p(z|y,u) -> x ~ p(x|y,z)           nothing
    conditional_generation        y = d(x*); u ~ q(u|y) -> z ~ p(z|y,u) -> x ~ p(x|y,z)            y
    conditional_reconstruction    y = d(x*); z ~ q(z|x*) -> x ~ p(x|y,z)                           y, z
    reconstruction_1              u ~ q(u|d(x*)) -> y ~ p(y|u) -> z ~ p(z|y,u) -> x ~ p(x|y,z)     u
    reconstruction_2              u ~ q(u|d(x*)) -> y ~ p(y|u);  z ~ q(z|x*) -> x ~ p(x|y,z)       u, z

Conditional generation is super-resolution when d downscales. For K transforms, "y" is y_K (the largest transform:
the smaller ones are functions of it) and "z" is z_K; reconstruction 2 sends u and every z_k.

Bits are counted two ways. A latent drawn from q is sent by bits-back coding (Hinton & van Camp; Townsend et al.),
at log q(s) - log p(s) bits for the sample s (KL(q || p) on average), against the prior the receiver can
compute; when that prior is conditioned on a latent the receiver does not hold, sender and receiver draw it from
a shared random seed. An image y is sent either raw, 8 bits a value, or under the model at its negative ELBO,
-log p(y | .) + the latents' bits-back cost. `bits_raw` counts the images raw, `bits_model` by the model; latents
are counted by the model in both.
"""
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .distributions import normal_log_prob, reparameterize
from .self_supervised_vae import SelfSupervisedVAE

MODES = ("generation", "conditional_generation", "conditional_reconstruction", "reconstruction_1", "reconstruction_2")
NEEDS_Y = ("conditional_generation", "conditional_reconstruction")  # not defined for the plain VAE (K = 0)
LN2 = math.log(2)


@dataclass
class Transmission:
    mode: str
    images: Tensor  # x_hat, N x C x H x W, 8-bit in [0,1]
    pyramid: list[Tensor]  # the images the decoder used, smallest first: [y_1, ..., y_K, x_hat]
    sent: dict[str, Tensor]  # what the receiver needs, by name
    bits_model: Tensor  # (N,) the cost of `sent` with images coded by the model
    bits_raw: Tensor  # (N,) the same with images sent as raw 8-bit values


def names(model: SelfSupervisedVAE) -> tuple[list[str], list[str]]:
    """The paper's names: y, z for one level; y_1, ..., y_K and z_1, ..., z_K for more."""
    k = model.config.num_transforms
    if k == 1:
        return ["y"], ["z"]
    return [f"y_{i}" for i in range(1, k + 1)], [f"z_{i}" for i in range(1, k + 1)]


@torch.no_grad()
def transmit(model: SelfSupervisedVAE, mode: str, x: Tensor | None = None, n: int | None = None,
             how: str = "argmax") -> Transmission:
    """Run one mode. x: the images to reconstruct (every mode but generation); n: how many to generate.
    how: "argmax" (srVAE's way: the likeliest component's mean) or "sample" for the discretized logistics."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; the modes are {MODES}")
    if mode in NEEDS_Y and model.config.num_transforms == 0:
        raise ValueError(f"{mode} conditions on y = d(x): the plain VAE (no transforms) has no y")
    model.eval()
    if mode == "generation":
        if n is None and x is None:
            raise ValueError("generation needs n, the number of images")
        return _generation(model, n if n is not None else len(x), how)
    if x is None:
        raise ValueError(f"{mode} reconstructs given images: pass x")
    parameter = next(model.parameters())
    return RECONSTRUCTIONS[mode](model, x.to(parameter.device, parameter.dtype), how)


def _generation(model, n, how):
    u = model.prior.sample(n, device=next(model.parameters()).device)
    images, _ = model.generate_levels(model.sample_image(model.p_y1_params(u), how), u, how)
    zero = torch.zeros(n, device=u.device)
    return Transmission("generation", images[-1], images, {}, zero, zero)


def _image_cost(model, inference) -> tuple[Tensor, Tensor]:
    """y_K's bits under the model, -ELBO(y_K) = -(log p(y_1..y_K | .) - KL_u - KL_z_1..z_{K-1}), and raw."""
    k = model.config.num_transforms
    bits_model = -(sum(inference.log_p[:k]) - sum(inference.kl[:k])) / LN2
    y = inference.images[k - 1]
    return bits_model, torch.full_like(bits_model, 8.0 * y[0].numel())


def _conditional_generation(model, x, how):
    inference = model.infer(x)
    ys = inference.images[:-1]  # the ground-truth transforms; y_1, ..., y_{K-1} are functions of y_K
    images, _ = model.generate_levels(ys[0], inference.latents[0], how, given_images=ys[1:])
    bits_model, bits_raw = _image_cost(model, inference)
    return Transmission("conditional_generation", images[-1], images, {names(model)[0][-1]: ys[-1]},
                        bits_model, bits_raw)


def _conditional_reconstruction(model, x, how):
    inference = model.infer(x)
    k = model.config.num_transforms
    y, z = inference.images[k - 1], inference.latents[k]
    x_hat = model.sample_image(model.p_y_params(k, y, z), how)
    bits_model, bits_raw = _image_cost(model, inference)
    z_bits = inference.kl[k] / LN2  # against p(z_K | y_K, z_{K-1}), z_{K-1} from the shared seed
    y_name, z_name = names(model)[0][-1], names(model)[1][-1]
    return Transmission("conditional_reconstruction", x_hat, inference.images[:-1] + [x_hat],
                        {y_name: y, z_name: z}, bits_model + z_bits, bits_raw + z_bits)


def _reconstruction_1(model, x, how):
    _, mu_u, logvar_u, u = model.infer_u(x)
    bits = model.kl_u(u, mu_u, logvar_u) / LN2
    images, _ = model.generate_levels(model.sample_image(model.p_y1_params(u), how), u, how)
    return Transmission("reconstruction_1", images[-1], images, {"u": u}, bits, bits)


def _reconstruction_2(model, x, how):
    ys, mu_u, logvar_u, u = model.infer_u(x)
    bits, zs, log_q = model.kl_u(u, mu_u, logvar_u) / LN2, [], []
    for k in range(1, model.config.num_transforms + 1):
        mu, logvar = model.q_z(k, ys[k])
        zs.append(reparameterize(mu, logvar))
        log_q.append(normal_log_prob(zs[-1], mu, logvar))
    images, log_p = model.generate_levels(model.sample_image(model.p_y1_params(u), how), u, how, given_latents=zs)
    # each z_k is coded against p(z_k | y_k, z_{k-1}) with the y_k the receiver has made, not the true one
    bits = bits + sum((q - p for q, p in zip(log_q, log_p)), torch.zeros_like(bits)) / LN2
    return Transmission("reconstruction_2", images[-1], images, {"u": u, **dict(zip(names(model)[1], zs))}, bits, bits)


RECONSTRUCTIONS = {"conditional_generation": _conditional_generation,
                   "conditional_reconstruction": _conditional_reconstruction,
                   "reconstruction_1": _reconstruction_1, "reconstruction_2": _reconstruction_2}
