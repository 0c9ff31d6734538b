"""Shipped checkpoints: written by `vaelab ship` with their provenance, loaded back into the chapter's network,
refused when stale (a changed recipe, changed model code) with a message naming the change, and the ones vaelab
ships are current and compute what their training run computed."""
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vaelab import recipes, shipped
from vaelab.experiment import Experiment, Recipe
from vaelab.__main__ import main
from vaelab.checkpoint import load_checkpoint, save_checkpoint
from vaelab.recipes import RECIPES
from vaelab.train import TrainConfig
from vaelab.vae import VAE


@pytest.fixture
def tiny(tmp_path, monkeypatch, tiny_config):
    monkeypatch.setenv("VAELAB_RUNS", str(tmp_path / "runs"))
    experiment = Experiment(Recipe("tiny_digits", "digits", tiny_config,
                                   TrainConfig(epochs=1, batch_size=50, progress=False)))
    monkeypatch.setitem(recipes.RECIPES, "tiny", lambda: experiment)
    return experiment


def test_ship_writes_the_run_trained_longer_with_its_provenance(tmp_path, tiny, capsys):
    assert main(["ship", "tiny", "--epochs", "3", "--out", str(tmp_path / "shipped")]) == 0
    [path] = (tmp_path / "shipped").glob("*.pt")
    assert path.name == "tiny_digits_VAE.pt" and oct(path.stat().st_mode & 0o777) == "0o644"
    assert not list((tmp_path / "runs").glob("*.pt"))  # it trained apart: the page's own quick run is not touched
    payload = load_checkpoint(path, shipped.SHIPPED_FORMAT)
    assert payload["experiment"] == "tiny" and payload["epochs"] == 3 and payload["recipe_steps"] == payload["steps"] // 3
    assert payload["code"] == shipped.code_digests(VAE)
    assert set(payload["code"]) == {"vaelab.vae", "vaelab.nn.resnet", "vaelab.distributions", "vaelab.images"}
    assert payload["run"] == tiny.fields() and payload["run_digest"] == tiny.digest()

    # the loaded model holds the trained run's weights, rounded to half precision, and computes its loss
    run = load_checkpoint(tiny.checkpoint(tmp_path / "runs" / "shipping"))
    model = VAE(tiny.recipe.model)
    loaded = shipped.load(tiny, model, directory=tmp_path / "shipped")
    assert loaded.model is not model and not loaded.model.training
    for name, value in loaded.model.state_dict().items():
        assert value.dtype == run["model"][name].dtype
        torch.testing.assert_close(value, run["model"][name], rtol=1e-3, atol=1e-4)
    objective = tiny.make_objective()
    objective.load_state_dict(payload["objective"])
    assert shipped.loss_on_test_batch(loaded.model, objective, tiny.recipe) == pytest.approx(
        stored_loss(payload), rel=1e-6)
    assert loaded.history.epochs["loss"] == pytest.approx(run["history"]["epochs"]["loss"])
    assert shipped.describe(payload) == f"trained 3 epochs on {payload['trained_on']}"

    # prefer: the shipped model in place of the page's run, with a sentence saying so
    own = tiny.train()
    assert own.trained_now and not tiny.train().trained_now  # the second call finds the finished run
    shown = shipped.prefer({"tiny": own}, directory=tmp_path / "shipped")
    [run] = shown.runs["tiny"]
    assert shown.shipped and run.model is not own.model and not run.trained_now and run.payload["epochs"] == 3
    assert len(run.history.epochs["loss"]) == 3 and shown.reason.startswith("the shipped checkpoint")
    os.environ["VAELAB_SHIPPED"] = "off"
    try:
        assert shipped.prefer({"tiny": own}, directory=tmp_path / "shipped").runs["tiny"] == [own]
    finally:
        del os.environ["VAELAB_SHIPPED"]
    assert "is not shipped" in shipped.prefer({"tiny": own}, directory=tmp_path / "nowhere").reason

    # shipping fewer epochs than the run in <runs>/shipping already holds writes what that run is: 3 epochs, not 2
    assert main(["ship", "tiny", "--epochs", "2", "--out", str(tmp_path / "again")]) == 0
    again = load_checkpoint(tmp_path / "again" / path.name, shipped.SHIPPED_FORMAT)
    assert again["epochs"] == 3
    assert (again["steps"], again["recipe_steps"]) == (payload["steps"], payload["recipe_steps"])


def test_a_stale_checkpoint_is_refused_naming_what_changed(tmp_path, tiny, capsys):
    out = tmp_path / "shipped"
    path = shipped.ship(tiny, 2, out, experiment_name="tiny")
    model = VAE(tiny.recipe.model)

    with pytest.raises(shipped.StaleCheckpointError, match=r"(?s)train\.lr: 0\.001 then, 0\.0005 now.*ship tiny"):
        shipped.load(tiny.with_train(lr=5e-4), model, directory=out)

    payload = load_checkpoint(path, shipped.SHIPPED_FORMAT)
    payload["code"]["vaelab.vae"] = "0" * 16  # as if vae.py had been edited since the checkpoint was trained
    save_checkpoint(path, payload)
    with pytest.raises(shipped.StaleCheckpointError, match="the code of vaelab.vae has changed"):
        shipped.load(tiny, model, directory=out)
    own = tiny.train()
    shown = shipped.prefer({"tiny": own}, directory=out)
    assert shown.runs["tiny"] == [own] and not shown.shipped and "stale" in shown.reason
    assert "vaelab.vae has changed" in capsys.readouterr().err


def test_an_experiment_is_given_a_function_that_makes_its_objective(tiny):
    from vaelab.losses import BalancedGaussianELBO
    with pytest.raises(ValueError, match="function of the recipe"):
        replace(tiny, objective=BalancedGaussianELBO(beta=1.0))


def stored_loss(payload: dict) -> float:
    """The test-batch loss `ship` measured with the weights as the file stores them (half precision, or float32)."""
    half = any(value.dtype == torch.float16 for value in payload["model"].values())
    return payload["test_batch_loss"]["float16" if half else "float32"]


def test_weights_whose_half_precision_moves_the_loss_too_far_are_shipped_in_float32(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(shipped, "HALF_PRECISION_TOLERANCE", 0.0)  # no rounding is small enough
    path = shipped.ship(tiny, 2, tmp_path / "shipped", experiment_name="tiny")
    payload = load_checkpoint(path, shipped.SHIPPED_FORMAT)
    run = load_checkpoint(tiny.checkpoint(tmp_path / "runs" / "shipping"))
    assert payload["test_batch_loss"]["float16"] != payload["test_batch_loss"]["float32"]
    for name, value in payload["model"].items():  # the trained weights, bit for bit
        assert value.dtype == run["model"][name].dtype and torch.equal(value, run["model"][name])
    loaded = shipped.load(tiny, VAE(tiny.recipe.model), directory=tmp_path / "shipped")
    objective = tiny.make_objective()
    objective.load_state_dict(payload["objective"])
    assert shipped.loss_on_test_batch(loaded.model, objective, tiny.recipe) == pytest.approx(
        payload["test_batch_loss"]["float32"], rel=1e-6)


def test_ship_must_train_longer_than_the_recipe(tmp_path, tiny, capsys):
    assert main(["ship", "tiny", "--epochs", "1", "--out", str(tmp_path)]) == 2
    assert "must train longer than the recipe's 1 epochs" in capsys.readouterr().err


def test_the_code_digest_ignores_comments_and_docstrings_only():
    def digest(source):
        return shipped.source_digest(source)
    base = digest("def f(x):\n    return 2 * x\n")
    assert digest('def f(x):\n    """Doubles."""\n    # why: because\n    return 2 * x  # twice\n') == base
    assert digest("def f(x):\n    return 3 * x\n") != base


@pytest.mark.parametrize("path", sorted(shipped.SHIPPED.glob("*.pt")), ids=lambda p: p.name)
def test_every_shipped_checkpoint_is_current_and_computes_what_it_was_trained_to(path):
    """Fails when a recipe or a model's code changes without the checkpoint being retrained: the message says how."""
    payload = load_checkpoint(path, shipped.SHIPPED_FORMAT)
    experiment = RECIPES[payload["experiment"]]().seeded(payload.get("seed", 0))
    model = experiment.model_class(experiment.recipe.model)
    loaded = shipped.load(experiment, model)
    assert loaded is not None and payload["epochs"] > experiment.recipe.train.epochs
    objective = experiment.make_objective()
    objective.load_state_dict(payload["objective"])
    if payload["adversary"] is not None:
        objective.adversary.load_state_dict(payload["adversary"])
    assert shipped.loss_on_test_batch(loaded.model, objective, experiment.recipe) == pytest.approx(
        stored_loss(payload), rel=1e-5)


def test_runs_compared_together_are_swapped_only_together_and_at_every_seed_asked(tmp_path, tiny):
    out = tmp_path / "shipped"
    path = shipped.ship(tiny, 2, out, experiment_name="tiny")
    own = tiny.train()
    other = replace(own, experiment=replace(tiny, recipe=replace(tiny.recipe, name="tiny_unshipped")))
    gamma = repr(own.objective.state_dict())
    shown = shipped.prefer({"a": own, "b": other}, directory=out)
    assert shown.runs == {"a": [own], "b": [other]} and "run of b is not shipped" in shown.reason
    assert repr(own.objective.state_dict()) == gamma  # the page's objective is left as its run left it

    [run] = shipped.prefer({"a": own}, directory=out).runs["a"]
    assert run.model is not own.model and len(run.history.epochs["loss"]) == 2
    assert repr(run.objective.state_dict()) == repr(load_checkpoint(path, shipped.SHIPPED_FORMAT)["objective"])

    # seeds 0 and 1 asked, seed 1 not shipped: seed 0 alone; then both, once seed 1 is shipped
    shown = shipped.prefer({"a": own}, seeds=(0, 1), directory=out)
    assert shown.shipped and shown.n_seeds == 1 and shown.reason.startswith("the longer-trained run of a from seed 1")
    shipped.ship(tiny.seeded(1), 2, out, experiment_name="tiny")
    shown = shipped.prefer({"a": own}, seeds=(0, 1), directory=out)
    assert shown.shipped and shown.n_seeds == 2 and [run.payload["seed"] for run in shown.runs["a"]] == [0, 1]


def test_the_shipped_command_lists_every_file_as_current(capsys):
    assert main(["shipped"]) == 0
    assert capsys.readouterr().out.count("| current |") == len(list(shipped.SHIPPED.glob("*.pt")))


def test_the_books_opening_figure_is_drawn_from_the_shipped_checkpoints(tmp_path):
    script = Path(__file__).parents[1] / "book" / "_static" / "intro_figure.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "intro.png")], capture_output=True, text=True,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stderr
    assert re.search(r"the shipped VAE \(trained \d+ epochs.* Split-VAE \(trained \d+ epochs", done.stdout), done.stdout
    assert (tmp_path / "intro.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.filterwarnings("ignore:inception-fid")  # 16 samples, on purpose: the test is about the plumbing
def test_evaluate_reads_a_shipped_checkpoint(tmp_path, tiny):
    import json

    import torchvision
    path = shipped.ship(tiny, 2, tmp_path / "shipped", experiment_name="tiny")
    weights = tmp_path / "fid_weights.pth"  # random weights with the FID network's names and shapes (offline)
    torch.save(torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False,
                                               num_classes=1008).state_dict(), weights)
    out = tmp_path / "evaluation"
    assert main(["evaluate", str(path), "--samples", "16", "--features", "inception", "--weights", str(weights),
                 "--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["recipe"] == "tiny_digits" and result["epoch"] == 2 and result["samples"] == 16

    renamed = path.with_name("renamed.pt")
    path.rename(renamed)
    assert main(["evaluate", str(renamed)]) == 2  # shipped files are found by name: another name is refused


def test_an_adversarial_run_ships_per_seed_with_its_discriminator_checked_every_epoch(tmp_path, monkeypatch):
    from vaelab import how_to_train_your_vae as how_to_train
    from vaelab.losses import HowToTrainLoss
    monkeypatch.setenv("VAELAB_RUNS", str(tmp_path / "runs"))
    config = how_to_train.HowToTrainYourVAEConfig(image_size=8, in_channels=1, latent_dim=8, filters=4, stages=2,
                                                 discriminator_filters=(4, 1), discriminator_strides=(2, 1))
    recipe = Recipe("tiny_gan", "digits", config, TrainConfig(epochs=1, batch_size=50, progress=False),
                    train_limit=200)
    experiment = Experiment(recipe, how_to_train.HowToTrainYourVAE,
                            lambda r: HowToTrainLoss(how_to_train.patchgan(r.model, seed=r.train.seed)), tag="_gan")
    monkeypatch.setitem(recipes.RECIPES, "tiny-gan", lambda: experiment)
    monkeypatch.setattr(shipped, "HELD_OUT_IMAGES", 40)
    assert main(["ship", "tiny-gan", "--epochs", "2", "--seed", "1", "--out", str(tmp_path / "shipped")]) == 0
    [path] = (tmp_path / "shipped").glob("*.pt")
    assert path.name == "tiny_gan_HowToTrainYourVAE_gan_seed1.pt"
    payload = load_checkpoint(path, shipped.SHIPPED_FORMAT)
    assert payload["seed"] == 1 and payload["held_out"]["steps"] == [4, 8]
    assert all(0 <= a <= 1 for a in payload["held_out"]["adversary_accuracy"])
    seeded = experiment.seeded(1)
    assert shipped.load(seeded, how_to_train.HowToTrainYourVAE(config), tmp_path / "shipped") is not None
    assert shipped.load(experiment, how_to_train.HowToTrainYourVAE(config), tmp_path / "shipped") is None  # seed 0
    [row] = shipped.inventory(tmp_path / "shipped")
    assert row["seed"] == 1 and row["status"] == "current"

    # the seed a chapter asks for, with the discriminator as its run left it; the page's run when it is not shipped
    page = experiment.train()
    [run] = shipped.prefer({"d": replace(page, experiment=seeded)}, directory=tmp_path / "shipped").runs["d"]
    for name, value in run.objective.adversary.state_dict().items():
        torch.testing.assert_close(value, payload["adversary"][name])
    assert run.payload["held_out"] == payload["held_out"] and not run.objective.adversary.training
    assert shipped.prefer({"d": page}, seeds=(0, 1), directory=tmp_path / "shipped").runs["d"] == [page]
    assert shipped.prefer({"d": page}, seeds=(1, 0), directory=tmp_path / "shipped").n_seeds == 1  # seed 1 alone
