"""Whether a discriminator has learned anything: the share of patches it classifies right, on images it never
trained on. A GAN arm whose discriminator sits at chance (1/2) adds nothing to a generator, whatever the budget."""
import torch
from torch import Tensor, nn


def patch_accuracy(real_logits: Tensor, generated_logits: Tensor) -> float:
    """The share of patches called right (real: logit > 0, generated: < 0), both halves weighted equally."""
    return 0.5 * ((real_logits > 0).float().mean() + (generated_logits < 0).float().mean()).item()


@torch.no_grad()
def adversary_accuracy(adversary: nn.Module, model: nn.Module, images: Tensor, batch_size: int = 250,
                       seed: int = 0) -> float:
    """The discriminator's patch accuracy on held-out images against the model's reconstructions of them, both on
    the [-1, 1] scale the discriminator trained on (Rivera's `x_hat_signed`); reconstructions use sampled codes,
    as in training, with noise drawn from `seed`."""
    adversary_mode, model_mode = adversary.training, model.training
    adversary.eval(), model.eval()
    device = next(model.parameters()).device
    real, generated = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for batch in images.split(batch_size):
            batch = batch.to(device)
            real.append(adversary(2 * batch - 1).flatten())
            generated.append(adversary(model(batch).x_hat_signed).flatten())
    adversary.train(adversary_mode), model.train(model_mode)
    return patch_accuracy(torch.cat(real), torch.cat(generated))
