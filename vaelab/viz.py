"""Figures of image batches and of Split-VAE parts, and widgets that stay interactive in the rendered book.

The widgets never call back into Python. Every picture a slider can reach is drawn in advance as a small PNG and
put in a stack of pages; the slider is tied to the stack's `selected_index` by `ipywidgets.jslink`, which runs in
the browser. So the widgets behave the same in Jupyter, in Colab and in the book's static HTML, where no kernel
runs: Jupyter Book embeds the saved widget state (the notebook's `metadata.widgets`), pictures included.

The stack is `ipywidgets.Stack` on ipywidgets 8. Colab ships ipywidgets 7.7, which has no Stack, and upgrading it
inside a running Colab kernel breaks widget display; there the stack is a `Tab` whose tab bar a style rule hides.
"""
import io
import math
import re

import ipywidgets as widgets
import matplotlib
import matplotlib.colorbar
import matplotlib.pyplot as plt
import matplotlib.text
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision.utils import make_grid

from .self_supervised_modes import MODES, NEEDS_Y, names, transmit
from .split_vae import SplitVAE, blend

SPLIT_ROWS = ("σ", "x̂₁", "x̂₂", "x̂")  # the paper's figure layout, top to bottom
BESIDE = dict(margin="0 0 0 24px")  # the layout of a widget placed to the right of another
PIXELATED = "vaelab-pixelated"  # CSS class of the widgets whose pictures keep square pixels


# ---------------------------------------------------------------- static figures

# The book's column shows a figure at most 672 CSS pixels wide at a 1280-pixel window (720 at 800, where the side
# bar folds away). A figure COLUMN_INCHES wide at the style's DPI is 670 pixels, so the browser shows it at its
# natural size, and a font of F points is F * DPI / 72 pixels high on the page: the smallest font below (tick labels,
# legends, 10 points) is 13.9 pixels, above the smallest text of the page's body (code, 12.8 pixels). A wider figure
# is shrunk to the column, and its text with it: draw at most COLUMN_INCHES wide (`panels` wraps many plots into
# rows), and pass no fontsize below MIN_FONT_POINTS. tests/site checks both on the rendered pages.
DPI = 100
COLUMN_INCHES = 6.7
MIN_FONT_POINTS = 10
THUMBNAIL_INCHES = 0.75  # each image of an image grid: 75 pixels, nearly three times a 28-pixel image

BOOK_STYLE = {
    "figure.dpi": DPI, "figure.figsize": (COLUMN_INCHES, 3.4), "font.size": 11, "axes.titlesize": 11,
    "axes.labelsize": 11, "xtick.labelsize": MIN_FONT_POINTS, "ytick.labelsize": MIN_FONT_POINTS,
    "legend.fontsize": MIN_FONT_POINTS, "legend.title_fontsize": MIN_FONT_POINTS, "figure.titlesize": 12,
    "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": False,  # a grid drawn over image tiles hides pixels; plots that need one turn it on (`grid`)
    "grid.alpha": 0.3, "legend.frameon": False, "image.cmap": "gray",
    "image.interpolation": "nearest",  # small images keep their pixels
    "savefig.pad_inches": 0.0,  # the inline backend saves with bbox_inches="tight": no margin beyond the column
}


def use_book_style() -> None:
    """One look for every figure of the book (chapters call it through vaelab.chapter.begin)."""
    plt.rcParams.update(BOOK_STYLE)


def smallest_font_points(fig: plt.Figure) -> float:
    """The smallest font of any visible text in `fig` (tick labels, legends, titles, annotations), in points."""
    fig.canvas.draw()  # tick labels exist only once drawn
    sizes = [text.get_fontsize() for text in fig.findobj(matplotlib.text.Text)
             if text.get_visible() and text.get_text().strip()]
    return min(sizes, default=float("inf"))


def panels(n: int, ncols: int | None = None, height: float = 3.0, **subplots) -> tuple[plt.Figure, np.ndarray]:
    """A figure of `n` plots that fits the book's column: at most two side by side (`ncols`), more wrap into rows,
    each row `height` inches high. Returns the figure and a flat array of its n axes (extra cells removed)."""
    ncols = min(n, 2) if ncols is None else ncols
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(COLUMN_INCHES, height * nrows), squeeze=False,
                             layout="constrained", **subplots)
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


def grid(ax: plt.Axes) -> plt.Axes:
    """Light grid lines on a plot of values (the book style draws none, so that none cross an image)."""
    ax.grid(True, alpha=0.3)
    return ax


def colorbar(mappable, ax: plt.Axes | list, label: str) -> matplotlib.colorbar.Colorbar:
    """A colour bar beside `ax` (an axes or a list of them) for a picture whose colour carries a value, e.g. a map
    of sigma in [0, 1]: `viz.colorbar(ax.imshow(sigma, vmin=0, vmax=1), ax, "σ")`."""
    figure = (ax[0] if isinstance(ax, (list, tuple, np.ndarray)) else ax).figure
    bar = figure.colorbar(mappable, ax=ax, shrink=0.9, pad=0.02)
    bar.set_label(label)
    bar.ax.tick_params(labelsize=MIN_FONT_POINTS)
    return bar


def to_array(images: Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile a batch N x C x H x W in [0,1] into one array: H' x W' for grey images, H' x W' x 3 for colour."""
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=pad_value)
    return grid[0].numpy() if images.shape[1] == 1 else grid.permute(1, 2, 0).numpy()  # make_grid makes grey RGB


def image_grid(images: Tensor, nrow: int = 8, title: str | None = None, ax: plt.Axes | None = None) -> plt.Axes:
    """Show a batch of images as one grid, `nrow` images per row."""
    if ax is None:  # THUMBNAIL_INCHES per image, shrunk only where a row would not fit the column
        rows = -(-len(images) // nrow)
        inches = min(THUMBNAIL_INCHES, COLUMN_INCHES / nrow)
        ax = plt.subplots(figsize=(nrow * inches, rows * inches + (0.35 if title else 0)), layout="constrained")[1]
    ax.imshow(to_array(images, nrow), cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def show_split_rows(sigma: Tensor, x1: Tensor, x2: Tensor, x: Tensor, n: int = 10, title: str | None = None,
                    ax: plt.Axes | None = None) -> plt.Axes:
    """The paper's figure layout: one column per image, rows sigma, x1, x2 and x = sigma x1 + (1 - sigma) x2."""
    channels, height = x.shape[1], x.shape[2]
    parts = [sigma[:n].expand(-1, channels, -1, -1), x1[:n], x2[:n], x[:n]]  # a grey sigma next to colour images
    if ax is None:
        inches = min(THUMBNAIL_INCHES, (COLUMN_INCHES - 0.6) / n)
        ax = plt.subplots(figsize=(inches * n + 0.6, inches * 4 + 0.4), layout="constrained")[1]
    padding = 2
    ax.imshow(to_array(torch.cat(parts), nrow=len(parts[0]), padding=padding), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([padding + row * (height + padding) + height / 2 for row in range(len(SPLIT_ROWS))],
                  SPLIT_ROWS, fontsize=13)
    ax.set_xticks([])
    ax.grid(False)  # rows are labelled by ticks; no line may cross the images
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    if title:
        ax.set_title(title)
    return ax


# ---------------------------------------------------------------- pictures for widgets


def png(images: list[Tensor], scale: int = 1) -> bytes:
    """Panels C x H x W in [0,1] side by side, separated by white lines, as PNG bytes; `scale` > 1 enlarges them
    without smoothing (pixels stay square)."""
    channels = max(p.shape[0] for p in images)
    panels = torch.stack([p.detach().float().cpu().expand(channels, -1, -1) for p in images])
    return _encode_png(to_array(panels, nrow=len(panels), padding=1), scale)


def grid_png(images: Tensor, nrow: int = 8) -> bytes:
    """A batch N x C x H x W in [0,1] as one PNG grid, `nrow` images per row."""
    return _encode_png(to_array(images, nrow))


def _encode_png(array: np.ndarray, scale: int = 1) -> bytes:
    picture = Image.fromarray((array * 255).round().astype(np.uint8))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="png", optimize=True)
    return buffer.getvalue()


def picture(images: list[Tensor], scale: int = 3) -> widgets.Image:
    """A `png` strip stored at the images' own resolution and shown `scale` times larger. The browser does the
    enlarging (without smoothing inside `pixelated`), so the saved widget state stays small."""
    height, width = images[0].shape[-2:]
    strip_width, strip_height = len(images) * (width + 1) + 1, height + 2  # with png's 1-pixel separators
    return widgets.Image(value=png(images), format="png", width=strip_width * scale, height=strip_height * scale)


STACK = "vaelab-stack"  # CSS class of the Tabs that stand in for a Stack on ipywidgets 7
STYLE = f"""<style>
.{PIXELATED} img {{ image-rendering: pixelated; }}
.{STACK} > .p-TabBar, .{STACK} > .lm-TabBar {{ display: none; }}
.{STACK} > .widget-tab-contents {{ border: none; padding: 0; }}
</style>"""


def pixelated(widget: widgets.Widget) -> widgets.VBox:
    """`widget` under STYLE: pictures enlarged without smoothing, ipywidgets 7's stand-in stacks without tab bars."""
    box = widgets.VBox([widgets.HTML(STYLE), widget])
    box.add_class(PIXELATED)
    return box


def tabs(pages: list[widgets.Widget], titles: list[str]) -> widgets.Tab:
    """A Tab with titles, written the way both ipywidgets 7 and 8 accept."""
    tab = widgets.Tab(pages)
    for i, title in enumerate(titles):
        tab.set_title(i, title)
    return tab


def column_titles(names: list[str], width: int, scale: int = 3) -> widgets.HTML:
    """Titles centred above the panels of a `png` strip whose images are `width` pixels wide; an index written
    the TeX way ("y_1", "x_0") is set as a subscript."""
    names = [re.sub(r"_(\w+)", r"<sub>\1</sub>", name) for name in names]
    cells = "".join(f"<div style='width:{(width + 1) * scale}px;text-align:center'>{name}</div>" for name in names)
    return widgets.HTML(f"<div style='display:flex;margin-left:{scale}px'>{cells}</div>")


def stack_under(slider: widgets.Widget, pages: list[widgets.Widget], trait: str = "value") -> widgets.Widget:
    """Pages of which pages[i] shows when the slider's `trait` is i, switched in the browser (jslink), not in
    Python: an ipywidgets 8 Stack, or on ipywidgets 7 a Tab with its tab bar hidden (see STYLE)."""
    if hasattr(widgets, "Stack"):
        stack = widgets.Stack(pages, selected_index=getattr(slider, trait))
    else:
        stack = widgets.Tab(pages, selected_index=getattr(slider, trait))
        stack.add_class(STACK)
    widgets.jslink((slider, trait), (stack, "selected_index"))
    return stack


def position_slider(description: str, values: list[float], start: int | None = None) -> widgets.SelectionSlider:
    """A slider over precomputed positions (the middle one first): its `index` picks the page, its readout the value."""
    return widgets.SelectionSlider(options=[(f"{v:.2f}", i) for i, v in enumerate(values)],
                                   index=len(values) // 2 if start is None else start, description=description)


def _columns(controls: list[widgets.Widget], left: tuple[list[str], widgets.Widget],
             right: tuple[list[str], widgets.Widget], width: int, scale: int,
             caption: widgets.Widget | None = None) -> widgets.VBox:
    """The sliders, a caption where given, then two columns of pictures under their titles (`left`, `right`:
    (titles, pictures)), the right one beside the left."""
    (left_titles, left_pictures), (right_titles, right_pictures) = left, right
    return widgets.VBox([widgets.HBox(controls), *([caption] if caption is not None else []), widgets.HBox([
        widgets.VBox([column_titles(left_titles, width, scale), left_pictures]),
        widgets.VBox([column_titles(right_titles, width, scale), right_pictures], layout=BESIDE)])])


# ---------------------------------------------------------------- the widgets


def sigma_explorer(sigma: Tensor, x1: Tensor, x2: Tensor, steps: int = 11, scale: int = 3) -> widgets.VBox:
    r"""Pick an image, see its sigma, x1, x2 and x, and slide the mask from "no split" to the learned one:

        sigma_a = (1 - a) * 1/2 + a * sigma,     x_a = sigma_a x1 + (1 - sigma_a) x2

    a = 0 is the plain average (x1 + x2)/2; a = 1 is the model's own output x. Every (image, a) picture is
    precomputed, so keep the batch small: the widget state holds len(sigma) * (steps + 1) PNGs.
    """
    if x1.dim() != 4 or x2.shape != x1.shape or sigma.shape != (len(x1), 1, *x1.shape[2:]):
        raise ValueError(f"expected sigma N x 1 x H x W and x1, x2 N x C x H x W, got {tuple(sigma.shape)}, "
                         f"{tuple(x1.shape)} and {tuple(x2.shape)}")
    alphas = torch.linspace(0, 1, steps).tolist()
    image = widgets.IntSlider(0, 0, len(sigma) - 1, description="image")
    alpha = position_slider("a", alphas, start=steps - 1)
    parts = stack_under(image, [picture([s, a, b, blend(s, a, b)], scale) for s, a, b in zip(sigma, x1, x2)])
    blends = []
    for s, a, b in zip(sigma, x1, x2):
        masks = [(1 - t) * 0.5 + t * s for t in alphas]
        blends.append(stack_under(alpha, [picture([m, blend(m, a, b)], scale) for m in masks], trait="index"))
    return pixelated(_columns([image, alpha], (list(SPLIT_ROWS), parts),
                              (["σₐ", "x̂ₐ"], stack_under(image, blends)), sigma.shape[-1], scale))


@torch.no_grad()
def decoded_panels(model: nn.Module, z: Tensor) -> dict[str, Tensor]:
    """What a decoder draws for z, by name: sigma, x1, x2, x for a Split-VAE; x alone for a plain VAE."""
    if isinstance(model, SplitVAE):
        return dict(zip(SPLIT_ROWS, model.decode_split(z)))  # in the paper's order
    return {"x̂": model.decode(z)}


@torch.no_grad()
def latent_explorer(model: nn.Module, images: Tensor, n_latents: int = 4, steps: int = 9, span: float = 3.0,
                    pairs: int = 3, scale: int = 3) -> widgets.VBox:
    r"""Two tabs over the latent space of a trained VAE (any model with `encode` and `decode`):

    traversal:      z = mu(x_0) with z_d set to t in [-span, span], for the n_latents latents d whose posterior
                    means vary most over `images` (the most active ones);
    interpolation:  z = (1 - t) mu(x_a) + t mu(x_b) for consecutive pairs (x_0, x_1), (x_2, x_3), ...

    All pictures are decoded at once and precomputed: n_latents * steps + pairs * steps of them.
    """
    if len(images) < 2 * pairs:
        raise ValueError(f"{pairs} pairs need {2 * pairs} images, got {len(images)}")
    model.eval()
    device = next(model.parameters()).device
    mu, _ = model.encode(images.to(device))
    latents = mu.var(0).argsort(descending=True)[:n_latents].tolist()
    values = torch.linspace(-span, span, steps, device=device)
    ts = torch.linspace(0, 1, steps, device=device)

    walks = mu[0].repeat(n_latents, steps, 1)  # n_latents x steps x L
    for i, d in enumerate(latents):
        walks[i, :, d] = values
    starts, ends = mu[0:2 * pairs:2], mu[1:2 * pairs:2]
    lines = (1 - ts[None, :, None]) * starts[:, None] + ts[None, :, None] * ends[:, None]  # pairs x steps x L
    z = torch.cat([walks.flatten(0, 1), lines.flatten(0, 1)])
    panels = decoded_panels(model, z)
    names, width = list(panels), images.shape[-1]
    pages = [picture([p[k] for p in panels.values()], scale) for k in range(len(z))]

    latent = widgets.SelectionSlider(options=[(f"z{d}", i) for i, d in enumerate(latents)], description="latent")
    value = position_slider("value", values.tolist())
    walk_pages = [stack_under(value, pages[i * steps:(i + 1) * steps], trait="index") for i in range(n_latents)]
    traversal = _columns([latent, value], (["x_0"], picture([images[0]], scale)),
                         (names, stack_under(latent, walk_pages, trait="index")), width, scale,
                         caption=widgets.HTML("the code of x<sub>0</sub>, with the chosen latent set to the "
                                              "slider's value"))

    pair = widgets.IntSlider(0, 0, len(starts) - 1, description="pair")
    t = position_slider("t", ts.tolist())
    offset = n_latents * steps
    line_pages = [stack_under(t, pages[offset + i * steps:offset + (i + 1) * steps], trait="index")
                  for i in range(len(starts))]
    ends_shown = [picture([images[2 * i], images[2 * i + 1]], scale) for i in range(len(starts))]
    interpolation = _columns([pair, t], (["x_a", "x_b"], stack_under(pair, ends_shown)),
                             (names, stack_under(pair, line_pages)), width, scale)
    return pixelated(tabs([traversal, interpolation], ["traversal", "interpolation"]))


MODE_TITLES = {"generation": "(i) generation", "conditional_generation": "(ii) conditional generation",
               "conditional_reconstruction": "(iii) conditional reconstruction",
               "reconstruction_1": "(iv) reconstruction 1", "reconstruction_2": "(v) reconstruction 2"}


@torch.no_grad()
def modes_explorer(model: nn.Module, images: Tensor, how: str = "argmax", scale: int = 3) -> widgets.VBox:
    """Pick a test image x* and one of the self-supervised VAE's five modes (vaelab.self_supervised_modes).

    Left: x* and its transforms y* = d(x*). Right: the images the mode makes at every level, smallest first (a
    generated y where the mode draws it, the true one where the mode is given it), with what the mode sends, its
    size in bits (raw and under the model) and the squared error of x_hat. Generation ignores x*. Smaller levels
    are enlarged to the size of x, pixels kept square. Every picture is precomputed: len(images) x 5 of them.
    """
    modes = [m for m in MODES if model.config.num_transforms or m not in NEEDS_Y]
    results = {m: transmit(model, m, images, how=how) for m in modes}
    truth = [level.cpu() for level in model.transform(images.to(next(model.parameters()).device))]
    size = images.shape[-1]
    y_names, _ = names(model)
    level_names = [*y_names, "x"] if model.config.num_transforms else ["x"]

    def enlarged(levels: list[Tensor], i: int) -> list[Tensor]:
        return [F.interpolate(level[i:i + 1].cpu(), size=(size, size), mode="nearest")[0] for level in levels]

    def caption(result, i: int) -> str:
        if not result.sent:
            sends = "sends nothing: a new image, unrelated to x*"
        else:
            sizes = ", ".join(f"{name} ({math.prod(t.shape[1:])} values)" for name, t in result.sent.items())
            sends = (f"sends {sizes}: {result.bits_raw[i]:,.0f} bits with images raw, "
                     f"{result.bits_model[i]:,.0f} bits under the model")
        error = ((result.images[i].cpu() - images[i].cpu()) ** 2).mean().item()
        return f"<div style='max-width:420px'>{MODE_TITLES[result.mode]}: {sends}; squared error {error:.4f}</div>"

    image = widgets.IntSlider(0, 0, len(images) - 1, description="image")
    mode = widgets.SelectionSlider(options=[(MODE_TITLES[m], i) for i, m in enumerate(modes)], description="mode",
                                   layout=widgets.Layout(width="420px"))
    made = [stack_under(mode, [widgets.VBox([picture(enlarged(results[m].pyramid, i), scale),
                                             widgets.HTML(caption(results[m], i))]) for m in modes], trait="index")
            for i in range(len(images))]
    given = [picture(enlarged(truth, i), scale) for i in range(len(images))]
    return pixelated(_columns([image, mode], ([f"{n}*" for n in level_names], stack_under(image, given)),
                              ([*level_names[:-1], "x̂"], stack_under(image, made)), size, scale))
