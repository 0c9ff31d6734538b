"""The command line, end to end: a recipe trained, its checkpoint evaluated into metrics.json, bad input refused."""
import json

import pytest
import torch
import torchvision

from vaelab import recipes
from vaelab.__main__ import main
from vaelab.train import TrainConfig


@pytest.mark.filterwarnings("ignore:inception-fid")  # 16 samples, on purpose: the test is about the plumbing
def test_train_then_evaluate_a_recipe(tmp_path, monkeypatch, capsys, tiny_config):
    monkeypatch.setenv("VAELAB_RUNS", str(tmp_path / "runs"))
    tiny = recipes.Experiment(recipes.Recipe("tiny_digits", "digits", tiny_config, 1.0,
                                             TrainConfig(epochs=1, batch_size=50, progress=False)))
    monkeypatch.setitem(recipes.RECIPES, "tiny", lambda: tiny)
    assert main(["train", "tiny"]) == 0
    [checkpoint] = (tmp_path / "runs").glob("*.pt")
    assert main(["train", "tiny", "--epochs", "2"]) == 0  # resumes the same run for one more epoch
    assert "finished" in capsys.readouterr().out

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
