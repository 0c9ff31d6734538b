"""fit under torch.distributed: two CPU processes (gloo) take the steps one process takes on the whole batch."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from vaelab import VAE, BalancedGaussianELBO, TrainConfig, fit
from vaelab.checkpoint import load_checkpoint
from vaelab.data import load


class Autoencoder(nn.Module):
    """No batch statistics and no noise: the loss of a batch is the mean of its images' losses, so two halves'
    averaged gradients are the whole batch's gradient."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 64), nn.Sigmoid())

    def forward(self, x):
        return self.net(x).view_as(x)


class SquaredError:
    def __call__(self, model, x):
        loss = ((model(x) - x) ** 2).flatten(1).sum(1).mean()
        return {"loss": loss, "mse": loss.detach() / x[0].numel()}

    def update(self, terms):
        pass

    def settings(self):
        return {}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def autoencoder_run(images, config):
    torch.manual_seed(0)
    model = Autoencoder()
    history = fit(model, SquaredError(), images, config)
    return model, history


def vae_run(images, config):
    torch.manual_seed(0)
    from conftest import TINY
    model = VAE(TINY)
    return model, fit(model, BalancedGaussianELBO(beta=1.0), images, config)


RUNS = {"autoencoder": autoencoder_run, "vae": vae_run}


def _process(rank, world, folder, run, images, configs):
    dist.init_process_group("gloo", init_method=f"file://{folder / 'process-group'}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        for config in configs:
            model, history = RUNS[run](images, config)
        if rank == 0:
            torch.save((model.state_dict(), dict(history), history.epochs), folder / "result.pt")
    finally:
        dist.destroy_process_group()


def in_two_processes(tmp_path, run, images, *configs):
    """Run `configs` one after the other in two gloo processes; rank 0's final weights and history."""
    tmp_path.mkdir(exist_ok=True)
    mp.start_processes(_process, args=(2, tmp_path, run, images, configs), nprocs=2, join=True, start_method="spawn")
    return torch.load(tmp_path / "result.pt")


@pytest.fixture(scope="module")
def digits():
    return load("digits", "train").images[:400]


def test_two_processes_train_the_model_one_process_trains_on_the_whole_batch(digits, tmp_path):
    config = TrainConfig(epochs=2, batch_size=50, progress=False, device="cpu")
    weights, steps, epochs = in_two_processes(tmp_path, "autoencoder", digits, config)
    model, history = autoencoder_run(digits, config)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(weights[name], value, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(steps["loss"]), torch.tensor(history["loss"]), rtol=1e-5, atol=1e-6)


def test_a_resumed_two_process_run_equals_an_uninterrupted_one(digits, tmp_path):
    ckpt = tmp_path / "run.pt"
    straight = TrainConfig(epochs=3, batch_size=50, progress=False, device="cpu")
    first, resumed = (TrainConfig(epochs=e, batch_size=50, progress=False, device="cpu", checkpoint=str(ckpt))
                      for e in (1, 3))
    _, straight_steps, _ = in_two_processes(tmp_path, "vae", digits, straight)
    _, resumed_steps, _ = in_two_processes(tmp_path / "again", "vae", digits, first, resumed)
    assert resumed_steps["loss"] == straight_steps["loss"]
    payload = load_checkpoint(ckpt)  # one checkpoint, by rank 0, holding both processes' random states
    assert payload["epoch"] == 3 and len(payload["rng"]["processes"]) == 2
    assert payload["run"]["train.processes"] == 2


def test_a_batch_that_does_not_split_over_the_processes_is_refused(digits, tmp_path):
    with pytest.raises(Exception, match="does not split evenly over 2 processes"):
        in_two_processes(tmp_path, "autoencoder", digits, TrainConfig(epochs=1, batch_size=51, progress=False))
