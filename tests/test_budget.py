"""vaelab.budget: FLOPs counted by torch equal hand counts, scale as they must, and every chapter's gpu budget fits a
Colab T4 in 15 minutes by the stated method."""
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from vaelab import budget, data, recipes


class Linear2(nn.Module):
    """A network whose FLOPs are easy to count by hand: two bias-free linear layers."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(6, 5, bias=False), nn.Linear(5, 3, bias=False)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)))


def test_a_linear_network_and_a_convolution_equal_their_hand_counts():
    net, x = Linear2(), torch.randn(4, 6)
    # a product of (n x a) and (a x b) is n*a*b multiply-adds, 2 FLOPs each
    forward = 2 * 4 * (6 * 5 + 5 * 3)
    assert budget.count_flops(lambda: net(x)) == forward
    # backward: the weight gradient of each layer, and the input gradient of every layer but the first
    # (x needs none): one product per gradient, each the size of the forward one
    backward = 2 * 4 * (6 * 5 + 5 * 3) + 2 * 4 * 5 * 3
    assert budget.count_flops(lambda: net(x).sum().backward()) == forward + backward
    conv, images = nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.randn(2, 3, 16, 16)
    assert budget.count_flops(lambda: conv(images)) == 2 * 2 * 16 * 16 * 8 * 3 * 3 * 3


def test_a_training_step_is_counted_per_image_and_scales_with_the_batch(tiny_config):
    from vaelab import VAE, BalancedGaussianELBO

    model, objective = VAE(tiny_config), BalancedGaussianELBO(beta=1.0)
    shape = (1, 8, 8)
    per_two = budget.training_step_flops(model, objective, shape, 2)
    assert per_two > 0 and budget.training_step_flops(model, objective, shape, 100) == 50 * per_two
    # the probe batch scaled up equals a count on the whole batch: every counted operation is linear in it
    x = budget.probe_images(1, 8, n=8)

    def step():
        objective(model, x)["loss"].backward()

    assert budget.count_flops(step) == 4 * per_two


def test_an_adversary_step_counts_both_networks():
    experiment = recipes.RECIPES["book-howto-patchgan-quick"]()
    plain = recipes.RECIPES["book-howto-standard-kl-quick"]()
    assert budget.step_flops(experiment) > budget.step_flops(plain) > 0


def test_estimates_scale_with_flops_steps_and_the_card():
    cost = budget.Cost(training=int(4e15), evaluation=int(1e15))
    t4 = budget.SUSTAINED_TFLOPS["T4"]
    assert cost.seconds("T4") == pytest.approx(4e15 / (t4["fp16"] * 1e12) + 1e15 / (t4["fp32"] * 1e12))
    assert (2 * cost).seconds("T4") == pytest.approx(2 * cost.seconds("T4"))
    assert cost.seconds("T4", "fp32") > cost.seconds("T4") > cost.seconds("A100") > cost.seconds("H100")
    assert budget.fastest_precision("T4") == "fp16" and budget.fastest_precision("A100") == "bf16"
    with pytest.raises(ValueError, match="no bf16"):
        budget.sustained_flops("T4", "bf16")
    with pytest.raises(ValueError, match="GPU class"):
        budget.sustained_flops("V100")
    for gpu, rates in budget.SUSTAINED_TFLOPS.items():  # sustained rates stay under the data sheets' peaks
        assert all(rates[p] < budget.PEAK_TFLOPS[gpu][p] for p in rates)

    quick = recipes.RECIPES["book-vae-quick"]()
    longer = quick.with_train(epochs=6)
    assert budget.training_steps(longer.recipe) == 2 * budget.training_steps(quick.recipe) == 600
    assert budget.experiment_cost(longer).training == 2 * budget.experiment_cost(quick).training


def test_evaluation_counts_sampling_features_and_importance_samples():
    experiment = recipes.RECIPES["book-vae-quick"]()
    model = experiment.model_class(experiment.recipe.model)
    assert budget.sampling_flops(model, 10) == 10 * budget.sampling_flops(model, 1) > 0
    shape = (1, 28, 28)
    one, many = (budget.importance_flops(model, shape, 3, k) for k in (1, 65))
    decoder = budget.sampling_flops(model, 1)  # an importance sample decodes once, as a prior sample does
    assert many - one == 3 * 64 * decoder
    assert budget.inception_flops_per_image() == pytest.approx(11.4e9, rel=0.01)  # InceptionV3 at 299x299
    cost = budget.evaluation_cost(experiment, samples=10, features="classifier", feature_images=20,
                                  likelihood_images=3, importance_samples=65)
    assert cost.training == 0 and cost.evaluation == 10 * decoder + 20 * budget.classifier_flops_per_image(1, 28) + many


def test_gpu_recipes_are_larger_and_longer_than_quick_and_the_paper_longest():
    for name in ("book-vae", "book-howto-patchgan"):
        quick, gpu, paper = (recipes.RECIPES[f"{name}-{m}"]() for m in ("quick", "gpu", "paper"))
        assert budget.parameter_count(gpu) > budget.parameter_count(quick)
        steps = [budget.training_steps(e.recipe) for e in (quick, gpu, paper)]
        assert steps[1] >= 3 * steps[0] and steps[2] > steps[1]
        assert gpu.recipe.dataset != "fashion-mnist" or gpu.recipe.model.image_size == 32
        assert gpu.recipe.train.precision == "auto" and quick.recipe.train.precision == "fp32"


def kept_count(work) -> budget.Cost:
    """A chapter's count as chapter.end makes it, kept where chapter.end looks: the tests below count each chapter
    once, and the chapters executed after the tests find the counts."""
    return budget.chapter_cost(work, keep_in=data.data_root() / "estimates")


@pytest.mark.parametrize("chapter", sorted(recipes.CHAPTER_WORK["gpu"]))
def test_every_chapter_fits_a_t4_in_15_minutes_and_the_docstring_says_so(chapter):
    cost = kept_count(recipes.CHAPTER_WORK["gpu"][chapter])
    assert 1 < cost.minutes("T4") <= 15
    row = re.search(rf"^ {{4}}{chapter} .* ([\d.]+) PFLOP +([\d.]+) PFLOP +([\d.]+) min$", recipes.__doc__, re.M)
    training, evaluation, minutes = map(float, row.groups())
    assert training == round(cost.training / 1e15, 2) and evaluation == round(cost.evaluation / 1e15, 2)
    assert minutes == round(cost.minutes("T4"), 1)


def test_a_kept_chapter_count_is_found_again_and_counted_anew_when_work_code_or_file_change(
        tmp_path, monkeypatch):
    work = recipes.ChapterWork(("book-vae-quick",), (recipes.Evaluation("book-vae-quick", samples=10),))
    counted = budget.chapter_cost(work, keep_in=tmp_path)
    assert counted == budget.chapter_cost(work) and len(list(tmp_path.iterdir())) == 1

    def no_counting(computation):
        raise AssertionError("counted again")

    with monkeypatch.context() as patched:
        patched.setattr(budget, "count_flops", no_counting)
        assert budget.chapter_cost(work, keep_in=tmp_path) == counted  # found, not counted
        more = recipes.ChapterWork(work.trains, (recipes.Evaluation("book-vae-quick", samples=20),))
        with pytest.raises(AssertionError, match="counted again"):  # another work is another key
            budget.chapter_cost(more, keep_in=tmp_path)
    kept, = tmp_path.iterdir()  # the other work's count failed before it was kept
    stored = json.loads(kept.read_text())
    kept.write_text(json.dumps({**stored, "key": "counted by another vaelab", "training": 1}))
    assert budget.chapter_cost(work, keep_in=tmp_path) == counted  # another vaelab's count is not used ...
    assert json.loads(kept.read_text()) == stored  # ... but replaced
    kept.write_text("{ damaged")
    assert budget.chapter_cost(work, keep_in=tmp_path) == counted  # counted again, and kept whole
    assert json.loads(kept.read_text()) == stored and stored.keys() == {"key", "training", "evaluation"}


CHAPTER_FILES = {int(path.name[:2]): path for path in (Path(__file__).parents[1] / "book").glob("0*.ipynb")}
READS_ITS_SIZES = (2, 3, 6, 7)  # chapters whose GPU path reads CHAPTER_WORK["gpu"][n].sizes (4 and 5: not yet)
QUOTES_ITS_ESTIMATE = (1, 2, 3, 6, 7)  # chapters whose header quotes chapter_gpu_estimate (4 and 5: not yet)


def code_of(chapter: int) -> str:
    notebook = json.loads(CHAPTER_FILES[chapter].read_text())
    return "\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code")


@pytest.mark.parametrize("chapter", READS_ITS_SIZES)
def test_a_chapter_s_gpu_path_computes_the_sizes_its_estimate_counts(chapter):
    code, sizes = code_of(chapter), recipes.CHAPTER_WORK["gpu"][chapter].sizes
    assert f'CHAPTER_WORK["gpu"][{chapter}].sizes' in code and sizes
    for name in sizes:  # every size the count is made of, read by the chapter's cells
        assert re.search(rf"""(GPU|\.sizes)\[["']{name}["']\]""", code), f"chapter {chapter} never reads {name!r}"
    work = recipes.CHAPTER_WORK["gpu"][chapter]
    if "samples" in sizes:  # the count follows the sizes: more samples per set, more evaluation, the same training
        builder = getattr(recipes, f"_chapter_{chapter}")
        more, cost = budget.chapter_cost(builder({**sizes, "samples": 2 * sizes["samples"]})), kept_count(work)
        assert more.evaluation > cost.evaluation and more.training == cost.training


@pytest.mark.parametrize("chapter", QUOTES_ITS_ESTIMATE)
def test_a_chapter_s_header_quotes_its_own_estimate(chapter):
    assert f"vaelab.chapter.begin(chapter={chapter})" in code_of(chapter)
    header = "".join(json.loads(CHAPTER_FILES[chapter].read_text())["cells"][0]["source"])
    assert "{glue:text}`chapter_gpu_estimate`" in header


def test_the_estimate_chapter_end_glues_is_vaelab_budget_s(monkeypatch):
    import vaelab.chapter

    monkeypatch.setattr(vaelab.chapter, "glued", {})
    vaelab.chapter.Chapter("gpu", 6).end()
    minutes = kept_count(recipes.CHAPTER_WORK["gpu"][6]).minutes("T4")
    assert vaelab.chapter.glued["chapter_gpu_estimate"] == f"an estimated {minutes:.1f} minutes on a Colab T4"
    vaelab.chapter.Chapter("quick", 1).end()  # chapter 1 trains nothing: the same in either mode
    assert 1 not in recipes.CHAPTER_WORK["gpu"] and "quick mode" in vaelab.chapter.glued["chapter_gpu_estimate"]


def test_the_old_full_names_resolve_to_the_gpu_runs_and_are_not_listed():
    assert recipes.RECIPES["book-vae-full"]().recipe == recipes.RECIPES["book-vae-gpu"]().recipe
    assert "book-vae-full" in recipes.RECIPE_ALIASES
    with pytest.warns(FutureWarning):
        assert recipes.fashion_vae("full").name == "fashion_vae_gpu"


def test_formatting():
    assert budget.format_flops(3.01e9) == "3.01 GFLOP" and budget.format_flops(1.8e16) == "18 PFLOP"
    assert budget.format_duration(42) == "42 s" and budget.format_duration(810) == "13.5 min"
    assert budget.format_duration(3.1 * 86400) == "3.1 d"
    assert budget.format_duration(0.42) == "0.4 s" and budget.format_duration(0.01) == "< 0.1 s"
    lines = budget.table([["a-long-name", "7"], ["b", "12"]], ["name", "n"], right={1}).splitlines()
    assert lines[0] == "name          n" and lines[2] == "a-long-name   7" and lines[3] == "b            12"


def test_a_dry_run_trains_gpu_recipes_at_full_size_on_standins(tmp_path, monkeypatch):
    import standins
    from vaelab.metrics import log_likelihood_bounds
    from vaelab.train import DRY_RUN_LIMITS

    standins.write_standins(tmp_path, images=8, datasets=("celeba", "cifar10"))
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path))
    monkeypatch.setenv("VAELAB_DRY_RUN", "1")
    monkeypatch.setenv("VAELAB_COMPUTE", "gpu")
    monkeypatch.delenv("VAELAB_RUNS", raising=False)
    for name in ("book-howto-patchgan-gpu", "book-selfvae-vae-gpu"):
        experiment = recipes.RECIPES[name]()
        run = experiment.train(progress=False)
        model, history = run.model, run.history
        assert experiment.checkpoint().parent == tmp_path / "runs" / "dry-run"  # never where real runs live
        # the full-size network and images, a few steps of a few images
        assert budget.parameter_count(experiment) == sum(p.numel() for p in model.parameters())
        epochs = min(experiment.recipe.train.epochs, DRY_RUN_LIMITS["epochs"])
        assert len(history["loss"]) == epochs * DRY_RUN_LIMITS["steps"]
    x = experiment.recipe.load_data("test").images
    assert x.shape[1:] == (3, 32, 32) and len(x) <= DRY_RUN_LIMITS["images"]
    bounds = log_likelihood_bounds(model, x[:2], k=512)  # capped to DRY_RUN_LIMITS["importance_samples"]
    assert torch.all(bounds.iwae >= bounds.elbo - 1e-3)
