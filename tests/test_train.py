import pytest
import torch

from vaelab import VAE, BalancedGaussianELBO, TrainConfig, compute_mode, fit, restore
from vaelab.data import load
from vaelab.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from vaelab.runtime import recipe_mode
from vaelab.train import DRY_RUN_LIMITS, NonFiniteLossError, auto_precision, dry_run, dry_run_cap, scaler_for


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
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "epoch": 1})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # killed half-way through writing

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "epoch": 2})
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
    (torch.rand(100, 1, 8, 8) * 255, "divide by 255"),
    (torch.rand(100, 1, 8, 8).index_fill_(0, torch.tensor([7]), float("nan")), "NaN"),
    (torch.randint(0, 2, (100, 1, 8, 8)), "float32"),
    (torch.rand(100, 1, 8, 8, dtype=torch.float64), r"float64 but torch.float32"),
    (torch.rand(100, 1, 8, 8).numpy(), "torch.from_numpy"),
    (torch.rand(0, 1, 8, 8), "empty"),
    (torch.rand(10, 1, 8, 8), "fewer than one batch"),
])
def test_bad_training_data_is_a_clear_error(tiny_config, bad, message):
    with pytest.raises(ValueError, match=message):
        train(tiny_config, bad, epochs=1)


def test_compute_switch(monkeypatch):
    monkeypatch.setenv("VAELAB_COMPUTE", "GPU")
    assert compute_mode() == "gpu"
    monkeypatch.setenv("VAELAB_COMPUTE", "quick")
    assert compute_mode() == "quick"
    monkeypatch.delenv("VAELAB_COMPUTE")
    assert compute_mode() == ("gpu" if torch.cuda.is_available() else "quick")
    monkeypatch.setenv("VAELAB_COMPUTE", "fast")
    with pytest.raises(ValueError, match="quick"):
        compute_mode()
    monkeypatch.setenv("VAELAB_COMPUTE", "paper")  # the papers' runs: the command line's, never a chapter's
    with pytest.raises(ValueError, match="python -m vaelab train"):
        compute_mode()


def test_full_is_the_old_name_of_the_gpu_budget(monkeypatch):
    monkeypatch.setenv("VAELAB_COMPUTE", "full")
    with pytest.warns(FutureWarning, match="now called 'gpu'"):
        assert compute_mode() == "gpu"
    with pytest.warns(FutureWarning):
        assert recipe_mode("full") == "gpu"
    assert recipe_mode("paper") == "paper" and recipe_mode("quick") == "quick"
    with pytest.raises(ValueError, match="budgets"):
        recipe_mode("huge")


def test_auto_precision_follows_the_device(monkeypatch):
    assert auto_precision("cpu") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert auto_precision("cuda") == "bf16"  # Ampere and later
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert auto_precision("cuda") == "fp16"  # T4, V100: fp16 with a gradient scaler
    assert auto_precision("mps") == "fp32"


def test_auto_on_a_cpu_is_the_fp32_run(tiny_config, digits, tmp_path):
    ckpt = tmp_path / "run.pt"
    auto = train(tiny_config, digits, epochs=1, checkpoint=str(ckpt), precision="auto")
    assert load_checkpoint(ckpt)["run"]["train.precision"] == "fp32"
    assert auto["loss"] == train(tiny_config, digits, epochs=1)["loss"]
    train(tiny_config, digits, epochs=2, checkpoint=str(ckpt))  # and an fp32 run resumes it


def test_fp16_with_a_gradient_scaler_trains_skips_overflows_and_resumes_exactly(tiny_config, digits, tmp_path):
    # fp16 autocast and torch.amp's scaler run on a CPU too: the T4's path, executed here
    assert scaler_for("fp16", torch.device("cpu")).is_enabled()
    assert not scaler_for("bf16", torch.device("cpu")).is_enabled() and not scaler_for("fp32", torch.device("cpu")).is_enabled()
    ckpt = tmp_path / "run.pt"
    whole = train(tiny_config, digits[:200], epochs=3, precision="fp16")
    assert whole.epochs["loss"][-1] < whole.epochs["loss"][0]
    train(tiny_config, digits[:200], epochs=2, checkpoint=str(ckpt), precision="fp16")
    payload = load_checkpoint(ckpt)
    # the initial scale 2^16 overflows fp16's gradients: the scaler skipped steps and halved its scale
    assert payload["scaler"]["scale"] < 2.0**16
    resumed = train(tiny_config, digits[:200], epochs=3, checkpoint=str(ckpt), precision="fp16")
    assert resumed["loss"] == whole["loss"]  # the scaler's state is part of the checkpoint


def test_a_dry_run_caps_epochs_steps_and_batch(tiny_config, digits, monkeypatch):
    monkeypatch.setenv("VAELAB_DRY_RUN", "1")
    assert dry_run() and dry_run_cap("importance_samples", 512) == DRY_RUN_LIMITS["importance_samples"]
    assert dry_run_cap("samples", 3) == 3
    history = train(tiny_config, digits, epochs=10)
    assert len(history.epochs["loss"]) == DRY_RUN_LIMITS["epochs"]
    assert len(history["loss"]) == DRY_RUN_LIMITS["epochs"] * DRY_RUN_LIMITS["steps"]
    monkeypatch.setenv("VAELAB_DRY_RUN", "0")
    assert not dry_run() and dry_run_cap("samples", 10_000) == 10_000
    monkeypatch.setenv("VAELAB_DRY_RUN", "maybe")
    with pytest.raises(ValueError, match="VAELAB_DRY_RUN"):
        dry_run()


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


@pytest.mark.parametrize("setting, message", [
    (dict(epochs=0), "epochs must be at least 1"),
    (dict(batch_size=1), "at least 2"),
    (dict(lr=0.0), "lr > 0"),
    (dict(lr_decay=1.5), "lr_decay"),
    (dict(device="cuda:0" if not torch.cuda.is_available() else "mps"), "this machine has no"),
    (dict(device="gpu please"), "is not a device"),
])
def test_nonsense_settings_are_a_clear_error(tiny_config, digits, setting, message):
    if setting.get("device") == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has both")
    with pytest.raises(ValueError, match=message):
        fit(VAE(tiny_config), BalancedGaussianELBO(), digits,
            TrainConfig(**{"epochs": 1, "batch_size": 50, "progress": False, **setting}))


@pytest.mark.parametrize("change, named", [
    (dict(objective=BalancedGaussianELBO(beta=100.0)), "beta"),
    (dict(lr=1e-2), "train.lr"),
    (dict(images="other"), "data"),
])
def test_resuming_refuses_a_checkpoint_of_another_run(tiny_config, digits, tmp_path, change, named):
    ckpt = str(tmp_path / "run.pt")
    train(tiny_config, digits, epochs=1, checkpoint=ckpt)
    images = digits.flip(-1) if change.pop("images", None) else digits
    objective = change.pop("objective", BalancedGaussianELBO(beta=1.0))
    with pytest.raises(CheckpointError, match=rf"another run(.|\n)*{named}(.|\n)*delete the file"):
        fit(VAE(tiny_config), objective, images,
            TrainConfig(epochs=2, batch_size=50, progress=False, checkpoint=ckpt, **change))
    assert load_checkpoint(ckpt)["epoch"] == 1  # untouched


def test_a_second_process_cannot_train_the_same_run(tiny_config, digits, tmp_path):
    import subprocess
    import sys
    import textwrap
    ckpt = tmp_path / "run.pt"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, sys, time
        lock = open({str(ckpt) + ".lock"!r}, "a+")
        fcntl.flock(lock, fcntl.LOCK_EX)  # what a training process holds
        lock.write("pid 4242 on a notebook"); lock.flush()
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointError, match="being trained by another process.*pid 4242"):
            train(tiny_config, digits, epochs=1, checkpoint=str(ckpt))
    finally:
        holder.kill()
        holder.wait()
    train(tiny_config, digits, epochs=1, checkpoint=str(ckpt))  # the lock dies with its process
    assert load_checkpoint(ckpt)["epoch"] == 1


def test_orphaned_temporary_files_of_a_killed_writer_are_removed(tiny_config, digits, tmp_path):
    ckpt = tmp_path / "run.pt"
    orphan = tmp_path / "run.pt.k1ll3d.tmp"
    orphan.write_bytes(b"half a checkpoint")
    unrelated = tmp_path / "run.pt2.abc.tmp"
    unrelated.write_bytes(b"another run's")
    train(tiny_config, digits, epochs=1, checkpoint=str(ckpt))
    assert not orphan.exists() and unrelated.exists()


KILLED_INSIDE_A_WRITE = """
import os, signal, sys, torch
import vaelab.checkpoint as checkpoint
from vaelab import VAE, BalancedGaussianELBO, TrainConfig, VAEConfig, fit
from vaelab.data import load

real_save, writes = torch.save, []
def save_then_die(payload, file):
    writes.append(1)
    if len(writes) == 2:  # inside the second checkpoint write: half a file on disk, then kill -9
        file.write(b"half a checkpoint")
        file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(payload, file)
checkpoint.torch.save = save_then_die
config = VAEConfig(**{config!r})
torch.manual_seed(0)
fit(VAE(config), BalancedGaussianELBO(beta=1.0), load("digits", "train").images[:600],
    TrainConfig(epochs=3, batch_size=50, progress=False, checkpoint=sys.argv[1]))
"""


def test_a_run_killed_inside_a_checkpoint_write_resumes_bit_exact(tiny_config, digits, tmp_path):
    import signal
    import subprocess
    import sys
    from dataclasses import asdict
    ckpt = tmp_path / "run.pt"
    script = KILLED_INSIDE_A_WRITE.replace("{config!r}", repr(asdict(tiny_config)))
    killed = subprocess.run([sys.executable, "-c", script, str(ckpt)])
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(ckpt)["epoch"] == 1  # the first epoch's checkpoint, intact
    assert len(list(tmp_path.glob("run.pt.*.tmp"))) == 1  # the killed write's half file

    resumed = train(tiny_config, digits, epochs=3, checkpoint=str(ckpt))
    straight = train(tiny_config, digits, epochs=3)
    assert resumed["loss"] == straight["loss"] and resumed.epochs == straight.epochs
    assert not list(tmp_path.glob("*.tmp"))  # no orphan left behind


class BreaksTheWeightsAtStep(BalancedGaussianELBO):
    """A finite loss at every step, but the update after step `step` leaves a non-finite weight: the case where
    the last step of an epoch diverges and no loss has seen it yet."""

    def __init__(self, model, step):
        super().__init__()
        self.model, self.step, self.calls = model, step, 0

    def update(self, terms):
        super().update(terms)
        self.calls += 1
        if self.calls == self.step:
            with torch.no_grad():
                next(self.model.parameters()).view(-1)[0] = float("inf")


def test_a_checkpoint_is_only_written_from_healthy_weights(tiny_config, digits, tmp_path):
    ckpt = tmp_path / "run.pt"
    model = VAE(tiny_config)
    with pytest.raises(NonFiniteLossError, match="weights became non-finite in epoch 2"):
        fit(model, BreaksTheWeightsAtStep(model, 2 * 12), digits,  # the last step of epoch 2
            TrainConfig(epochs=3, batch_size=50, progress=False, checkpoint=str(ckpt)))
    payload = load_checkpoint(ckpt)
    assert payload["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in payload["model"].values() if t.is_floating_point())


def test_reading_the_losses_every_step_or_every_fifty_gives_the_same_run(tiny_config, digits):
    every_step = train(tiny_config, digits, epochs=2, sync_every=1)
    windowed = train(tiny_config, digits, epochs=2, sync_every=50)
    assert every_step["loss"] == windowed["loss"] and every_step.epochs == windowed.epochs


def test_channels_last_is_the_same_computation(tiny_config, digits):
    plain = train(tiny_config, digits, epochs=1)
    nhwc = train(tiny_config, digits, epochs=1, channels_last=True)
    torch.testing.assert_close(torch.tensor(nhwc["loss"]), torch.tensor(plain["loss"]), rtol=1e-4, atol=1e-5)


def test_bf16_trains_and_is_another_run(tiny_config, digits, tmp_path):
    ckpt = tmp_path / "run.pt"
    fp32 = train(tiny_config, digits, epochs=2, checkpoint=str(ckpt))
    bf16 = train(tiny_config, digits, epochs=2, precision="bf16")
    assert bf16.epochs["loss"][-1] < bf16.epochs["loss"][0]
    # bf16 keeps 8 bits of mantissa: close to the fp32 run, not equal to it
    assert bf16["loss"] != fp32["loss"]
    assert abs(bf16.epochs["loss"][-1] - fp32.epochs["loss"][-1]) < 0.05 * fp32.epochs["loss"][-1]
    with pytest.raises(CheckpointError, match="train.precision: 'fp32' in the checkpoint, 'bf16' now"):
        train(tiny_config, digits, epochs=3, checkpoint=str(ckpt), precision="bf16")
    # how the steps run is not part of the run: channels-last or a different sync interval may resume it
    train(tiny_config, digits, epochs=3, checkpoint=str(ckpt), channels_last=True, sync_every=7)
    assert load_checkpoint(ckpt)["epoch"] == 3


def test_bad_execution_options_are_clear_errors(tiny_config, digits):
    with pytest.raises(ValueError, match="precision must be one of"):
        train(tiny_config, digits, precision="fp8")
    with pytest.raises(ValueError, match="sync_every must be at least 1"):
        train(tiny_config, digits, sync_every=0)


def test_compiled_step_matches_the_eager_one(tiny_config, digits):
    import torch._inductor.config
    eager = train(tiny_config, digits[:200], epochs=1)
    # compiled kernels draw the reparameterisation noise from their own generator unless told to use eager's
    with torch._inductor.config.patch(fallback_random=True):
        compiled = train(tiny_config, digits[:200], epochs=1, compile=True)
    torch.testing.assert_close(torch.tensor(compiled["loss"]), torch.tensor(eager["loss"]), rtol=1e-4, atol=1e-5)
