"""The book's opening picture (book/intro.md): what the VAE and the Split-VAE of chapters 2 and 4 draw from codes of
the prior, with the Split-VAE's blending map sigma beside the two images it blends. Made from the checkpoints vaelab
ships (vaelab/shipped), so it needs no training and no data:

    python book/_static/intro_figure.py      # writes book/_static/intro.png (or the path given as its argument)
"""
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from vaelab import shipped, viz  # noqa: E402
from vaelab.recipes import RECIPES  # noqa: E402

COLUMNS = 8
vae_experiment, split_experiment = RECIPES["book-vae-quick"](), RECIPES["book-splitvae-quick"]()
recipe = vae_experiment.recipe
vae = shipped.load(vae_experiment, vae_experiment.model_class(recipe.model))
split = shipped.load(split_experiment, split_experiment.model_class(recipe.model))
if vae is None or split is None:
    raise SystemExit("vaelab ships no current checkpoint of book-vae-quick or book-splitvae-quick: "
                     "see `python -m vaelab shipped`")
torch.manual_seed(0)
with torch.no_grad():
    vae_samples = vae.model.decode(torch.randn(COLUMNS, recipe.model.latent_dim))
    sigma, x1, x2, x = split.model.decode_split(torch.randn(COLUMNS, recipe.model.latent_dim))

viz.use_book_style()
fig, (top, bottom) = plt.subplots(2, 1, figsize=(viz.COLUMN_INCHES, 4.7), height_ratios=[1, 3.6], layout="constrained")
viz.image_grid(vae_samples, nrow=COLUMNS, ax=top)
top.set_title("a VAE's samples (chapter 2)")
viz.show_split_rows(sigma, x1, x2, x, n=COLUMNS, ax=bottom, title="a Split-VAE's samples: x̂ = σ x̂₁ + (1 − σ) x̂₂ (chapter 4)")
viz.colorbar(bottom.get_images()[0], bottom, "σ, the share of x̂₁ (top row)")
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("intro.png")
fig.savefig(out, dpi=viz.DPI, bbox_inches="tight")
print(f"wrote {out} from the shipped VAE ({shipped.describe(vae.payload)}) and Split-VAE "
      f"({shipped.describe(split.payload)})")
