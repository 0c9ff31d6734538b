"""vaelab.viz: the figure layout, the pictures, and the widget state a notebook embeds for the rendered book."""
import base64
import io
from pathlib import Path

import ipywidgets as widgets
import matplotlib
import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pytest
import torch
from nbclient import NotebookClient
from PIL import Image

import vaelab
from vaelab import VAEConfig, viz
from vaelab.split_vae import SplitVAE, blend

matplotlib.use("Agg")
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def test_split_rows_follow_the_paper_layout():
    sigma, x1, x2, x = (torch.full((3, 1, 6, 6), v) for v in (0.0, 0.25, 0.5, 0.75))
    ax = viz.show_split_rows(sigma, x1, x2, x, n=3)
    assert [label.get_text() for label in ax.get_yticklabels()] == list(viz.SPLIT_ROWS)
    shown = ax.get_images()[0].get_array()
    assert shown.shape == (4 * 8 + 2, 3 * 8 + 2)  # 4 rows, 3 columns of 6x6 images with 2-pixel borders
    row_centres = [round(t) for t in ax.get_yticks()]
    assert [float(shown[r, 5]) for r in row_centres] == [0.0, 0.25, 0.5, 0.75]  # sigma on top, x at the bottom


BODY_SMALLEST_TEXT_PX = 12.8  # the smallest text of the book's pages: code, 0.8 of the 16-pixel body


def rendered_text_px(points: float, fig) -> float:
    """How high text of `points` appears in the book: shown at its natural size when the figure fits the column,
    shrunk with the figure when it is wider."""
    width_px = fig.get_figwidth() * fig.dpi
    shrink = min(1.0, viz.COLUMN_INCHES * viz.DPI / width_px)
    return points * fig.dpi / 72 * shrink


def test_the_book_style_keeps_text_as_large_as_the_body_text():
    with matplotlib.rc_context(viz.BOOK_STYLE):
        fig, axes = viz.panels(3)
        for ax in axes:
            ax.plot([0, 1], [1, 0], label="a line")
            ax.set(title="a title", xlabel="x", ylabel="y")
            ax.legend()
        assert len(axes) == 3 and fig.get_figwidth() <= viz.COLUMN_INCHES  # 3 panels wrap into two rows
        assert rendered_text_px(viz.smallest_font_points(fig), fig) >= BODY_SMALLEST_TEXT_PX
        plt.close(fig)
        wide = plt.figure(figsize=(13, 3.5))  # what the chapters drew before: three panels in one row
        wide.add_subplot().plot([0, 1])
        assert rendered_text_px(viz.smallest_font_points(wide), wide) < BODY_SMALLEST_TEXT_PX
        plt.close(wide)


def test_images_carry_no_grid_and_thumbnails_stay_large():
    with matplotlib.rc_context(viz.BOOK_STYLE):
        images = torch.rand(20, 1, 28, 28)
        ax = viz.image_grid(images, nrow=10, title="twenty")
        fig = ax.figure
        width_px = fig.get_figwidth() * fig.dpi
        shown_px = width_px / 10 * min(1.0, viz.COLUMN_INCHES * viz.DPI / width_px)  # one of ten per row
        assert shown_px >= 56, f"a thumbnail of a 10-wide grid is {shown_px:.0f} pixels: too small to see pixels"
        sigma, x1, x2, x = (torch.rand(8, 1, 28, 28) for _ in range(4))
        split = viz.show_split_rows(sigma, x1, x2, x, n=8)
        for axes in (ax, split):
            gridlines = [line for line in axes.get_xgridlines() + axes.get_ygridlines() if line.get_visible()]
            assert not gridlines, "grid lines cross the image tiles"
        plt.close("all")


def test_colorbar_labels_the_value_a_colour_carries():
    with matplotlib.rc_context(viz.BOOK_STYLE):
        fig, (ax,) = viz.panels(1)
        bar = viz.colorbar(ax.imshow(np.random.rand(8, 8), vmin=0, vmax=1), ax, "σ")
        assert bar.ax.get_ylabel() == "σ" and bar.mappable.get_clim() == (0, 1)
        assert viz.smallest_font_points(fig) >= viz.MIN_FONT_POINTS
        plt.close(fig)


def test_png_is_an_enlarged_strip_of_the_panels():
    a, b = torch.zeros(1, 2, 3), torch.ones(1, 2, 3)
    picture = Image.open(io.BytesIO(viz.png([a, b], scale=2)))
    pixels = np.asarray(picture.convert("L"))
    assert pixels.shape == (2 * (2 + 2), 2 * (2 * 3 + 3))  # 1-pixel white separators, then doubled
    assert (pixels[2:6, 2:8] == 0).all() and (pixels[2:6, 10:16] == 255).all()


def random_parts(n=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, c, size, size, generator=g) for c in (1, 1, 1)]


def models_of(widget, kind):
    """Every widget of type `kind` inside `widget`, in display order."""
    found = [widget] if isinstance(widget, kind) else []
    for child in getattr(widget, "children", ()):
        found += models_of(child, kind)
    return found


def test_sigma_explorer_precomputes_every_position_and_links_in_the_browser():
    sigma, x1, x2 = random_parts(n=3)
    explorer = viz.sigma_explorer(sigma, x1, x2, steps=5)
    pictures = models_of(explorer, widgets.Image)
    assert len(pictures) == 3 + 3 * 5  # one strip of parts per image, one blend per (image, slider position)
    alpha_pages = [s for s in models_of(explorer, widgets.Stack) if len(s.children) == 5]
    last = alpha_pages[0].children[-1]  # a = 1: the model's own mask and output
    expected = Image.open(io.BytesIO(viz.png([sigma[0], blend(sigma[0], x1[0], x2[0])])))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(last.value))), np.asarray(expected))
    # stored at the images' resolution, shown 3 times larger by the browser, without smoothing
    assert (int(last.width), int(last.height)) == (3 * expected.width, 3 * expected.height) == (3 * 19, 3 * 10)
    assert viz.PIXELATED in explorer._dom_classes


def test_sigma_explorer_rejects_parts_that_do_not_fit_together():
    sigma, x1, x2 = random_parts(n=3)
    for bad in [(x1.expand(-1, 3, -1, -1), x1, x2),  # a three-channel mask
                (sigma, x1, x2[:2]),  # fewer x2 than x1
                (sigma[..., :-1], x1, x2)]:  # a narrower mask
        with pytest.raises(ValueError, match="sigma N x 1 x H x W"):
            viz.sigma_explorer(*bad)


def test_latent_explorer_decodes_traversals_and_interpolations():
    torch.manual_seed(0)
    model = SplitVAE(VAEConfig(image_size=8, latent_dim=6, base_dim=8, num_scales=1, emb_dim=16)).eval()
    tab = viz.latent_explorer(model, torch.rand(4, 1, 8, 8), n_latents=2, steps=3, pairs=2).children[-1]
    assert tab.titles == ("traversal", "interpolation")
    traversal, interpolation = tab.children
    assert len(models_of(traversal, widgets.Image)) == 2 * 3 + 1  # plus the image the walk starts from
    assert len(models_of(interpolation, widgets.Image)) == 2 * 3 + 2  # plus the two end images per pair
    with pytest.raises(ValueError, match="pairs"):
        viz.latent_explorer(model, torch.rand(3, 1, 8, 8), pairs=2)


def test_notebook_embeds_a_kernel_free_sigma_explorer(tmp_path):
    """What Jupyter Book renders without a kernel: the widget state nbclient saves in the notebook metadata."""
    steps, n = 4, 2
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import torch\n"
        "from vaelab import viz\n"
        "g = torch.Generator().manual_seed(0)\n"
        f"viz.sigma_explorer(*(torch.rand({n}, 1, 8, 8, generator=g) for _ in range(3)), steps={steps})"
    )])
    checkout = Path(vaelab.__file__).resolve().parents[1]  # the kernel imports the vaelab under test
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(checkout)}}).execute()

    state = nb.metadata.widgets[WIDGET_STATE]["state"]
    by_name = {}
    for model_id, model in state.items():
        by_name.setdefault(model["model_name"], []).append((model_id, model))

    images = [m for _, m in by_name["ImageModel"]]
    assert len(images) == n + n * steps
    for image in images:
        (buffer,) = image["buffers"]
        assert buffer["path"] == ["value"]
        assert base64.b64decode(buffer["data"]).startswith(b"\x89PNG")

    stacks = {model_id: m["state"] for model_id, m in by_name["StackModel"]}
    links = [m["state"] for _, m in by_name["LinkModel"]]
    slider_of = {m["state"]["description"]: model_id for name in ("IntSliderModel", "SelectionSliderModel")
                 for model_id, m in by_name[name]}
    linked = {(link["source"][0].removeprefix("IPY_MODEL_"), link["source"][1],
               link["target"][0].removeprefix("IPY_MODEL_"), link["target"][1]) for link in links}
    alpha_stacks = [i for i, s in stacks.items() if len(s["children"]) == steps]
    assert len(alpha_stacks) == n
    for stack_id in alpha_stacks:  # every blend page is switched by the slider, in the browser
        assert (slider_of["a"], "index", stack_id, "selected_index") in linked
    image_stacks = [i for i, s in stacks.items() if len(s["children"]) == n]
    assert all((slider_of["image"], "value", i, "selected_index") in linked for i in image_stacks)

    (output,) = nb.cells[0].outputs
    view = output["data"][WIDGET_VIEW]
    assert view["model_id"] in state
    assert state[view["model_id"]]["model_name"] == "VBoxModel"


# ---------------------------------------------------------------- ipywidgets 7 (Colab's) and 8

LINK_SUMMARY = """
import json, torch
import ipywidgets
from ipywidgets.embed import dependency_state
from vaelab import viz
g = torch.Generator().manual_seed(0)
state = dependency_state(viz.sigma_explorer(*(torch.rand(2, 1, 8, 8, generator=g) for _ in range(3)), steps=4))
def model(ref):
    return state[ref.removeprefix("IPY_MODEL_")]
links = []
for m in state.values():
    if m["model_name"] == "LinkModel":
        (source, trait), (target, target_trait) = m["state"]["source"], m["state"]["target"]
        pages = model(target)
        links.append([model(source)["state"]["description"], trait, pages["model_name"], target_trait,
                      len(pages["state"]["children"]), pages["state"].get("_dom_classes", [])])
print(json.dumps({"version": ipywidgets.__version__, "links": links}))
"""
IPYWIDGETS7 = Path(__file__).resolve().parents[1] / ".ci" / "cache" / "ipywidgets7"  # .ci/setup installs it


def link_summary(extra_path: Path | None = None) -> dict:
    import json
    import os
    import subprocess
    import sys
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", LINK_SUMMARY], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("version", ["8", "7"])
def test_sliders_switch_precomputed_pages_in_the_browser_on_ipywidgets_7_and_8(version):
    if version == "7" and not (IPYWIDGETS7 / "ipywidgets").is_dir():
        pytest.skip(f"ipywidgets 7.7 is not installed in {IPYWIDGETS7} (bash .ci/setup installs it there)")
    summary = link_summary(IPYWIDGETS7 if version == "7" else None)
    assert summary["version"].startswith(version + ".")
    pages_model = "StackModel" if version == "8" else "TabModel"
    links = summary["links"]
    # the mask slider "a" switches, for each of the 2 images, a stack of its 4 blends; "image" switches the images
    blends = [link for link in links if link[:2] == ["a", "index"]]
    images = [link for link in links if link[:2] == ["image", "value"]]
    assert len(blends) == 2 and all(link[2:5] == [pages_model, "selected_index", 4] for link in blends)
    assert len(images) == 2 and all(link[2:5] == [pages_model, "selected_index", 2] for link in images)
    if version == "7":  # the Tabs that stand in for Stacks carry the class whose style hides their tab bar
        assert all(viz.STACK in link[5] for link in links)
