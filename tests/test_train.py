import pytest
import torch

from vaelab import VAE, BalancedGaussianELBO, TrainConfig, compute_mode, fit, restore
from vaelab.data import load
from vaelab.train import CheckpointError, NonFiniteLossError, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def digits():
    return load("digits", "train").images[:600]


def train(config, images, **kw):
    torch.manual_seed(0)  # the same initial weights for every run
    return fit(VAE(config), BalancedGaussianELBO(beta=1.0), images, TrainConfig(batch_size=50, progress=False, **kw))


def test_training_reduces_the_loss_and_gamma_never_increases(tiny_config, digits):
    history = train(tiny_config, digits, epochs=6)
    assert history.epochs["loss"][-1] < history.epochs["loss"][0]
    gammas = history["gamma"]
    assert all(b <= a for a, b in zip(gammas, gammas[1:]))
    assert len(history["loss"]) == 6 * (600 // 50)


def test_resumed_run_equals_uninterrupted_run(tiny_config, digits, tmp_path):
    straight = train(tiny_config, digits, epochs=3)
    ckpt = tmp_path / "run.pt"
    train(tiny_config, digits, epochs=1, checkpoint=str(ckpt))
    assert load_checkpoint(ckpt)["epoch"] == 1
    resumed = train(tiny_config, digits, epochs=3, checkpoint=str(ckpt))  # new model and objective, same file
    assert resumed["loss"] == straight["loss"]
    assert resumed.epochs == straight.epochs
    assert load_checkpoint(ckpt)["epoch"] == 3


def test_checkpoint_restores_the_model(tiny_config, digits, tmp_path):
    ckpt = tmp_path / "run.pt"
    model = VAE(tiny_config)
    fit(model, BalancedGaussianELBO(), digits, TrainConfig(epochs=1, batch_size=50, progress=False, checkpoint=str(ckpt)))
    fresh = VAE(tiny_config)
    restore(fresh, ckpt)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_corrupt_truncated_and_foreign_checkpoints_are_clear_errors(tiny_config, digits, tmp_path):
    ckpt = tmp_path / "run.pt"
    train(tiny_config, digits, epochs=1, checkpoint=str(ckpt))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(ckpt.read_bytes()[:1000])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for path in (truncated, garbage, foreign, tmp_path / "missing.pt"):
        with pytest.raises(CheckpointError, match=path.name):
            load_checkpoint(path)
    other = VAE(tiny_config.__class__(**{**tiny_config.__dict__, "latent_dim": 3}))
    with pytest.raises(CheckpointError, match="latent_dim"):
        restore(other, ckpt)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"format": "vaelab-checkpoint-1", "epoch": 1})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # killed half-way through writing

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"format": "vaelab-checkpoint-1", "epoch": 2})
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind


class ExplodesAtStep(BalancedGaussianELBO):
    def __init__(self, step):
        super().__init__()
        self.calls, self.step = 0, step

    def __call__(self, model, x):
        terms = super().__call__(model, x)
        self.calls += 1
        if self.calls == self.step:
            terms["loss"] = terms["loss"] * float("nan")
        return terms


def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(tiny_config, digits, tmp_path):
    ckpt = tmp_path / "run.pt"
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 3: loss=nan, rec=.*kl=.*kept in .*run\.pt"):
        fit(VAE(tiny_config), ExplodesAtStep(12 + 3), digits,
            TrainConfig(epochs=3, batch_size=50, progress=False, checkpoint=str(ckpt)))
    assert load_checkpoint(ckpt)["epoch"] == 1


@pytest.mark.parametrize("bad, message", [
    (torch.rand(100, 8, 8), "N x C x H x W"),
    (torch.rand(100, 1, 8, 8) * 2, r"\[0,1\]"),
    (torch.randint(0, 2, (100, 1, 8, 8)), "floats"),
    (torch.rand(10, 1, 8, 8), "fewer than one batch"),
])
def test_bad_training_data_is_a_clear_error(tiny_config, bad, message):
    with pytest.raises(ValueError, match=message):
        train(tiny_config, bad, epochs=1)


def test_compute_switch(monkeypatch):
    monkeypatch.setenv("VAELAB_COMPUTE", "FULL")
    assert compute_mode() == "full"
    monkeypatch.setenv("VAELAB_COMPUTE", "quick")
    assert compute_mode() == "quick"
    monkeypatch.delenv("VAELAB_COMPUTE")
    assert compute_mode() == ("full" if torch.cuda.is_available() else "quick")
    monkeypatch.setenv("VAELAB_COMPUTE", "fast")
    with pytest.raises(ValueError, match="quick"):
        compute_mode()


def test_adamax_with_the_lower_bounded_per_step_decay(tiny_config, digits, tmp_path):
    config = dict(optimizer="adamax", lr=2e-3, eps=1e-7, lr_decay=0.9, min_lr=5e-4)
    ckpt = tmp_path / "run.pt"
    train(tiny_config, digits, epochs=1, checkpoint=str(ckpt), **config)  # 12 steps
    payload = load_checkpoint(ckpt)
    assert payload["optimizer"]["state"] and "exp_inf" in next(iter(payload["optimizer"]["state"].values()))
    # lr_t = max(lr * decay^t, min_lr) after t = 12 steps, computed by hand
    assert payload["optimizer"]["param_groups"][0]["lr"] == pytest.approx(max(2e-3 * 0.9**12, 5e-4))
    straight = train(tiny_config, digits, epochs=2, **config)
    resumed = train(tiny_config, digits, epochs=2, checkpoint=str(ckpt), **config)  # the schedule resumes too
    assert resumed["loss"] == straight["loss"]
    with pytest.raises(ValueError, match="adamax"):
        train(tiny_config, digits, epochs=1, optimizer="sgd")


class InitialisedVAE(VAE):
    """Records the batches its data-dependent initialisation saw."""

    seen: list

    def initialize(self, x):
        type(self).seen.append(x.clone())
        self.decoder.body[-1].bias.fill_(float(x.mean()))


def test_data_dependent_initialisation_runs_once_on_the_first_batch_of_a_fresh_run(tiny_config, digits, tmp_path):
    InitialisedVAE.seen = []
    ckpt = tmp_path / "run.pt"
    fit(InitialisedVAE(tiny_config), BalancedGaussianELBO(), digits,
        TrainConfig(epochs=1, batch_size=50, progress=False, checkpoint=str(ckpt)))
    assert len(InitialisedVAE.seen) == 1 and InitialisedVAE.seen[0].shape == (50, 1, 8, 8)
    fit(InitialisedVAE(tiny_config), BalancedGaussianELBO(), digits,
        TrainConfig(epochs=2, batch_size=50, progress=False, checkpoint=str(ckpt)))
    assert len(InitialisedVAE.seen) == 1  # a resumed run keeps its trained weights


class CriticObjective(BalancedGaussianELBO):
    """A VAE loss plus a tiny adversary: enough to test that fit trains and resumes two networks."""

    adversary_lr, adversary_betas = 1e-3, (0.5, 0.999)

    def __init__(self):
        super().__init__(beta=1.0)
        self.adversary = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1))

    def __call__(self, model, x):
        out = model(x)
        terms = super().__call__(model, x)
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        fake = self.adversary(out.x_hat)
        terms["loss"] = terms["loss"] + bce(fake, torch.ones_like(fake))
        real, fake_detached = self.adversary(x), self.adversary(out.x_hat.detach())
        terms["adversary_loss"] = bce(real, torch.ones_like(real)) + bce(fake_detached, torch.zeros_like(real))
        return terms


def test_an_adversary_trains_on_its_own_loss_and_resumes_exactly(tiny_config, digits, tmp_path):
    def run(epochs, checkpoint=None):
        torch.manual_seed(0)
        objective = CriticObjective()
        history = fit(VAE(tiny_config), objective, digits,
                      TrainConfig(epochs=epochs, batch_size=50, progress=False, checkpoint=checkpoint))
        return history, objective.adversary

    straight, adversary = run(2)
    torch.manual_seed(0)
    untrained = CriticObjective().adversary  # the same initial weights as in run()
    assert not torch.equal(untrained[1].weight, adversary[1].weight)
    ckpt = str(tmp_path / "gan.pt")
    run(1, ckpt)
    resumed, resumed_adversary = run(2, ckpt)
    assert resumed["loss"] == straight["loss"] and resumed["adversary_loss"] == straight["adversary_loss"]
    torch.testing.assert_close(resumed_adversary.state_dict(), adversary.state_dict(), rtol=0, atol=0)
