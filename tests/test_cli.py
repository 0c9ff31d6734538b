"""The command line, end to end: a recipe trained, its checkpoint evaluated into metrics.json, bad input refused."""
import json

import pytest
import torch
import torchvision

from vaelab import recipes
from vaelab.__main__ import main
from vaelab.experiment import Experiment, Recipe
from vaelab.train import TrainConfig


@pytest.mark.filterwarnings("ignore:inception-fid")  # 16 samples, on purpose: the test is about the plumbing
def test_train_then_evaluate_a_recipe(tmp_path, monkeypatch, capsys, tiny_config):
    monkeypatch.setenv("VAELAB_RUNS", str(tmp_path / "runs"))
    tiny = Experiment(Recipe("tiny_digits", "digits", tiny_config,
                             TrainConfig(epochs=1, batch_size=50, progress=False)))
    monkeypatch.setitem(recipes.RECIPES, "tiny", lambda: tiny)
    assert main(["train", "tiny"]) == 0
    [checkpoint] = (tmp_path / "runs").glob("*.pt")
    assert f"checkpoint: {checkpoint}\n" in capsys.readouterr().out  # the run says where it is
    assert main(["train", "tiny", "--epochs", "2"]) == 0  # resumes the same run for one more epoch
    finished = capsys.readouterr().out
    assert "finished" in finished and f"python -m vaelab evaluate {checkpoint}" in finished

    # torchvision's InceptionV3 has the FID network's parameter names and shapes: its random weights stand in
    # for the real file, which cannot be downloaded here
    weights = tmp_path / "fid_weights.pth"
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                               num_classes=1008).state_dict(), weights)
    out = tmp_path / "evaluation"
    assert main(["evaluate", str(checkpoint), "--samples", "16", "--features", "inception",
                 "--weights", str(weights), "--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["recipe"] == "tiny_digits" and result["epoch"] == 2 and result["samples"] == 16
    assert "FID" in result["distance"] and "digits test split" in result["reference"]
    assert result["prior"] >= 0 and result["gmm"] >= 0
    assert result["latent_dim"] == tiny_config.latent_dim and 0 <= result["inactive_latents"] <= result["latent_dim"]
    for grid in ("samples_prior.png", "samples_gmm.png"):
        assert (out / grid).read_bytes().startswith(b"\x89PNG")


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert main(["evaluate", str(junk)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    try:
        main(["train", "no-such-recipe"])
    except SystemExit as exit_:
        assert exit_.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:inception-fid")
def test_a_self_supervised_checkpoint_is_evaluated_by_its_bits_per_dimension(tmp_path, monkeypatch, capsys):
    from vaelab.losses import SelfSupervisedELBO
    from vaelab.self_supervised_vae import SelfSupervisedVAE, SelfSupervisedVAEConfig

    monkeypatch.setenv("VAELAB_RUNS", str(tmp_path / "runs"))
    config = SelfSupervisedVAEConfig(
        image_size=28, in_channels=1, latent_channels=2, latent_size=7, n_mix=2, prior="standard_normal",
        prior_options=(), top_encoder=(2, 1), top_decoder=(2, 1), encoder=(2, 1), prior_image=(2, 1),
        prior_latent=(2, 1, 1), prior_core=(2, 1, 1), decoder_latent=(2, 1), decoder_core=(2, 1, 1))
    tiny = Experiment(Recipe("tiny_selfvae", "fashion-mnist", config,
                             TrainConfig(epochs=1, batch_size=50, optimizer="adamax", lr=2e-3, progress=False),
                             train_limit=100),
                      SelfSupervisedVAE, lambda recipe: SelfSupervisedELBO())
    monkeypatch.setitem(recipes.RECIPES, "tiny-selfvae", lambda: tiny)
    assert main(["train", "tiny-selfvae"]) == 0
    [checkpoint] = (tmp_path / "runs").glob("*.pt")
    assert f"checkpoint: {checkpoint}" in capsys.readouterr().out
    weights = tmp_path / "fid_weights.pth"
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                               num_classes=1008).state_dict(), weights)
    out = tmp_path / "evaluation"
    assert main(["evaluate", str(checkpoint), "--samples", "8", "--features", "inception", "--weights", str(weights),
                 "--likelihood-images", "6", "--importance-samples", "4", "--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["recipe"] == "tiny_selfvae" and result["prior"] >= 0
    # the importance-weighted bound is at least the ELBO for every image, so in bits it is at most the ELBO's
    assert 0 < result["bpd_iwae_4"] <= result["bpd_elbo"]
    assert result["bpd_images"] == "the first 6 images of the test split"
    assert (out / "samples_prior.png").read_bytes().startswith(b"\x89PNG")
    bars = capsys.readouterr().err  # minutes on a CPU: the user sees them pass
    assert "sampling p(x): 100%" in bars and "8/8" in bars
    assert "importance sampling, K=4: 100%" in bars and "6/6" in bars


def test_the_recipes_table_lists_sizes_steps_and_estimated_times_aligned(monkeypatch, capsys):
    quick = recipes.RECIPES["book-vae-quick"]
    long_name = "a-recipe-with-a-much-longer-name-than-the-others"
    monkeypatch.setattr(recipes, "RECIPES", {"book-vae-quick": quick, long_name: quick, "book-vae-full": quick})
    monkeypatch.setattr(recipes, "RECIPE_ALIASES", {"book-vae-full": "book-vae-gpu"})
    monkeypatch.setattr(recipes, "CHAPTER_WORK", {"gpu": {2: recipes.ChapterWork(("book-vae-quick",))}})
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rule, *rows = lines[:4]
    assert header.split()[:6] == ["recipe", "data", "size", "parameters", "steps", "training"] and "T4" in header
    assert [row.split()[0] for row in rows] == ["book-vae-quick", long_name]  # the old alias is not listed
    assert rows[0].split()[1:5] == ["fashion-mnist", "28x28", "0.80M", "300"]
    # aligned: every column of every row ends where the header's does
    assert len({len(line) for line in (header, rule, *rows)}) == 1 and rows[0].index("fashion-mnist") == rows[1].index("fashion-mnist")
    chapter_header, _, chapter_row = lines[5:8]
    assert chapter_header.startswith("chapter (gpu budget)") and chapter_row.split()[:2] == ["2", "1"]
