"""Pictures of training dynamics, drawn from plain arrays: maps per epoch (E, N, 2) per layer, labels, scores.

- `dynamics_page`: an offline Bokeh page, one panel per layer, an epoch slider and a play button. All panels
  read ONE ColumnDataSource whose position columns the slider swaps, so a point keeps its colour, its hover
  card (thumbnail, class, prediction at that epoch) and its selection as it moves, across panels and epochs.
- `dynamics_gif`: the same maps as an animated GIF (Pillow, fixed palette, in-between frames).
- `separability_figure`, `stats_figure`: curves over epochs (matplotlib).
- `section_html`: the report's "Training dynamics" section body.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping, Sequence

import numpy as np

from mlplab.viz.pages import make_offline
from mlplab.viz.figures import LR_COLOR, new_figure, png_data_uri, styled
from mlplab.viz.palette import class_colors


def _extent(coords: np.ndarray, pad: float = 0.05) -> tuple[float, float, float, float]:
    """One fixed (x0, x1, y0, y1) window for all epochs of a panel, so the picture does not jump around."""
    lo, hi = coords.reshape(-1, 2).min(0), coords.reshape(-1, 2).max(0)
    span = np.maximum(hi - lo, 1e-9)
    lo, hi = lo - pad * span, hi + pad * span
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def _tooltip() -> str:
    return ('<div style="display:flex;gap:8px;align-items:center;font:12px/1.35 system-ui,sans-serif;color:#222">'
            '<img src="@thumb{safe}" width="72" height="72" alt="" style="image-rendering:pixelated;'
            'border:1px solid #ddd;flex:none"><div><b>@label{safe}</b><br>predicted: @pred{safe}<br>'
            '<span style="color:#777">#@index</span></div></div>')


def dynamics_page(panels: Mapping[str, np.ndarray], epochs: Sequence[int], labels, class_names: Sequence[str], *,
                  predictions=None, thumbnails: Sequence[str] | None = None, indices=None,
                  epoch_notes: Sequence[str] | None = None, title: str = "Training dynamics",
                  method: str = "") -> str:
    """A standalone HTML page: panels {layer: coords (E, N, 2)}, predictions (E, N) class indices or None."""
    from bokeh.embed import file_html
    from bokeh.layouts import column, gridplot, row
    from bokeh.models import (BoxSelectTool, Button, ColumnDataSource, CustomJS, Div, HoverTool, LassoSelectTool,
                              PanTool, Range1d, ResetTool, Slider, TapTool, WheelZoomTool)
    from bokeh.plotting import figure
    from bokeh.resources import INLINE
    from bokeh.transform import factor_cmap

    labels = np.asarray(labels, dtype=np.int64)
    # Rows in class order: Bokeh's legend lists classes in the order they first appear. Every per-point array is
    # permuted alike, so a point keeps its identity, colour and index across panels and epochs.
    order = np.argsort(labels, kind="stable")
    labels = labels[order]
    indices = order if indices is None else np.asarray(indices)[order]
    thumbnails = None if thumbnails is None else [thumbnails[i] for i in order]
    predictions = None if predictions is None else np.asarray(predictions)[:, order]
    panels = {layer: np.asarray(coords)[:, order] for layer, coords in panels.items()}
    n, n_epochs = len(labels), len(epochs)
    names = [str(c) for c in class_names]
    names += [str(i) for i in range(len(names), int(labels.max(initial=-1)) + 1)]
    safe = [html.escape(s) for s in names]
    last = n_epochs - 1
    preds = None if predictions is None else np.asarray(predictions, dtype=np.int64)
    data = {"label": [safe[i] for i in labels], "index": np.asarray(indices if indices is not None else np.arange(n)),
            "thumb": list(thumbnails) if thumbnails is not None else [""] * n,
            "pred": [safe[i] if 0 <= i < len(safe) else str(i) for i in preds[last]] if preds is not None
            else ["–"] * n}
    store: dict[str, np.ndarray] = {}
    for k, coords in enumerate(panels.values()):
        coords = np.asarray(coords, dtype=np.float32)
        data[f"x{k}"], data[f"y{k}"] = coords[last, :, 0], coords[last, :, 1]
        for e in range(n_epochs):
            store[f"x{k}_{e}"], store[f"y{k}_{e}"] = coords[e, :, 0], coords[e, :, 1]
    if preds is not None:
        for e in range(n_epochs):
            store[f"pred_{e}"] = preds[e].astype(np.int32)
    source = ColumnDataSource(data, name="positions")
    frames = ColumnDataSource(store, name="frames")

    side = 460 if len(panels) <= 2 else 360
    size = float(np.clip(240.0 / np.sqrt(max(n, 1)), 3.0, 8.0))
    cmap = factor_cmap("label", palette=class_colors(len(names)), factors=safe)
    plots = []
    for k, (layer, coords) in enumerate(panels.items()):
        x0, x1, y0, y1 = _extent(np.asarray(coords))
        p = figure(width=side, height=side, title=f"{layer}" + (f" · {method}" if method else ""),
                   x_range=Range1d(x0, x1), y_range=Range1d(y0, y1), output_backend="webgl",
                   tools=[PanTool(), WheelZoomTool(), BoxSelectTool(), LassoSelectTool(), TapTool(), ResetTool()],
                   toolbar_location="above", name=f"panel{k}")
        p.toolbar.active_scroll = p.select_one(WheelZoomTool)
        p.xaxis.visible = p.yaxis.visible = False
        p.xgrid.visible = p.ygrid.visible = False
        p.outline_line_color = "#e0e0e0"
        legend = {"legend_field": "label"} if k == len(panels) - 1 else {}
        r = p.scatter(f"x{k}", f"y{k}", source=source, size=size, fill_color=cmap, line_color=None,
                      fill_alpha=0.8, nonselection_fill_alpha=0.08, selection_fill_alpha=1.0, **legend)
        p.add_tools(HoverTool(renderers=[r], tooltips=_tooltip()))
        plots.append(p)
    if plots[-1].legend:
        plots[-1].legend.location = "top_left"
        plots[-1].add_layout(plots[-1].legend[0], "right")
        plots[-1].width += 90

    notes = list(epoch_notes) if epoch_notes else [""] * n_epochs
    texts = [f"<b>epoch {int(e)}</b>" + ("  (before training)" if int(e) == 0 else "") +
             (f" · {html.escape(notes[i])}" if notes[i] else "") for i, e in enumerate(epochs)]
    info = Div(text=texts[last], name="epoch_info", styles={"font": "14px system-ui,sans-serif", "padding": "4px 8px"})
    slider = Slider(start=0, end=max(last, 1), step=1, value=last, title="snapshot", width=420, name="epoch_slider",
                    disabled=n_epochs < 2, show_value=False)
    slider.js_on_change("value", CustomJS(args=dict(source=source, frames=frames, info=info, texts=texts,
                                                    names=safe, n_panels=len(panels),
                                                    has_pred=preds is not None), code="""
        const i = Math.round(cb_obj.value);
        const f = frames.data;
        const upd = Object.assign({}, source.data);
        for (let k = 0; k < n_panels; k++) { upd['x' + k] = f['x' + k + '_' + i]; upd['y' + k] = f['y' + k + '_' + i]; }
        if (has_pred) { upd['pred'] = Array.from(f['pred_' + i], (c) => names[c] !== undefined ? names[c] : String(c)); }
        source.data = upd;
        info.text = texts[i];
    """))
    button = Button(label="▶ Play", width=90, name="play_button", disabled=n_epochs < 2)
    button.js_on_event("button_click", CustomJS(args=dict(slider=slider, button=button), code="""
        if (window.__mlplab_timer) {
            clearInterval(window.__mlplab_timer); window.__mlplab_timer = null; button.label = '▶ Play'; return;
        }
        if (slider.value >= slider.end) { slider.value = slider.start; }
        button.label = '❚❚ Pause';
        window.__mlplab_timer = setInterval(() => {
            if (slider.value >= slider.end) {
                clearInterval(window.__mlplab_timer); window.__mlplab_timer = null; button.label = '▶ Play';
            } else { slider.value = slider.value + 1; }
        }, 600);
    """))
    intro = Div(text=(f"<h2 style='margin:0 0 4px;font:600 17px system-ui,sans-serif'>{html.escape(title)}</h2>"
                      f"<p style='margin:0;color:#555;font:13px system-ui,sans-serif'>{n} validation samples, "
                      f"{n_epochs} snapshots. Press play or drag the slider; each map starts from the previous "
                      "epoch's, so points move instead of jumping. Hover for the sample; box or lasso select to "
                      "follow points in every panel and epoch.</p>"))
    grid = gridplot(plots, ncols=min(len(plots), 3), toolbar_location="above", merge_tools=True)
    page = file_html(column(intro, row(button, slider, info), grid), resources=INLINE, title=title)
    return make_offline(page)


# --- the animated GIF ----------------------------------------------------------------------------------------

def _font(size: int):
    from PIL import ImageFont

    try:
        import matplotlib

        return ImageFont.truetype(f"{matplotlib.get_data_path()}/fonts/ttf/DejaVuSans.ttf", size)
    except (OSError, ImportError):
        return ImageFont.load_default()


def dynamics_gif(panels: Mapping[str, np.ndarray], epochs: Sequence[int], labels, n_classes: int, *,
                 epoch_notes: Sequence[str] | None = None, side: int = 340, tween: int = 2,
                 frame_ms: int = 110, hold_ms: int = 1500) -> bytes:
    """An animated GIF of the maps: one panel per layer, `tween` in-between frames per pair of epochs."""
    from PIL import Image, ImageDraw

    labels = np.asarray(labels, dtype=np.int64)
    colors = class_colors(max(n_classes, int(labels.max(initial=0)) + 1))
    # palette: 0 white, 1 text, 2 grey, then the classes; drawn straight in "P" mode (no per-frame quantising)
    rgb = [(255, 255, 255), (34, 34, 34), (150, 150, 150)] + [
        tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in colors]
    palette = [v for c in rgb for v in c] + [0] * (768 - 3 * len(rgb))
    head, foot, gap = 30, 34, 10
    width = len(panels) * side + (len(panels) + 1) * gap
    height = head + side + foot
    font, small = _font(15), _font(12)
    r = max(1.2, min(3.0, 90.0 / np.sqrt(max(len(labels), 1))))
    windows = [_extent(np.asarray(c)) for c in panels.values()]
    coords = [np.asarray(c, dtype=np.float64) for c in panels.values()]
    notes = list(epoch_notes) if epoch_notes else [""] * len(epochs)
    order = np.random.default_rng(0).permutation(len(labels))  # no class is always drawn on top

    def frame(e0: int, t: float) -> Image.Image:
        im = Image.new("P", (width, height), 0)
        im.putpalette(palette)
        draw = ImageDraw.Draw(im)
        for k, (name, c, (x0, x1, y0, y1)) in enumerate(zip(panels, coords, windows)):
            left = gap + k * (side + gap)
            draw.text((left, 8), str(name), fill=1, font=font)
            draw.rectangle([left, head, left + side - 1, head + side - 1], outline=2)
            xy = c[e0] if t == 0 else (1 - t) * c[e0] + t * c[e0 + 1]
            px = left + 4 + (xy[:, 0] - x0) / (x1 - x0) * (side - 8)
            py = head + 4 + (1 - (xy[:, 1] - y0) / (y1 - y0)) * (side - 8)
            for i in order:
                draw.ellipse([px[i] - r, py[i] - r, px[i] + r, py[i] + r], fill=3 + int(labels[i]))
        shown = e0 if t < 0.5 else e0 + 1
        text = f"epoch {int(epochs[shown])}" + (" (before training)" if int(epochs[shown]) == 0 else "")
        if notes[shown]:
            text += f"  ·  {notes[shown]}"
        draw.text((gap, head + side + 8), text, fill=1, font=small)
        bar = (width - 2 * gap) * (shown / max(len(epochs) - 1, 1))
        draw.rectangle([gap, height - 5, gap + bar, height - 2], fill=2)
        return im

    frames, durations = [], []
    for e in range(len(epochs)):
        frames.append(frame(e, 0.0))
        durations.append(hold_ms if e in (0, len(epochs) - 1) else frame_ms * 3)
        if e < len(epochs) - 1:
            for s in range(1, tween + 1):
                frames.append(frame(e, s / (tween + 1)))
                durations.append(frame_ms)
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                   optimize=False, disposal=1)
    return buf.getvalue()


# --- curves --------------------------------------------------------------------------------------------------

def separability_figure(epochs: Sequence[int], knn_layer: Mapping[str, np.ndarray],
                        knn_map: Mapping[str, np.ndarray], val_accuracy: Mapping[int, float] | None = None,
                        method: str = "map"):
    """10-NN accuracy in each layer (solid) and in its 2-D map (dashed) per epoch, with validation accuracy."""
    with styled():
        fig = new_figure(7.2, 3.6)
        ax = fig.add_subplot(1, 1, 1)
        colors = ["#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377"]
        for i, layer in enumerate(knn_layer):
            c = colors[i % len(colors)]
            ax.plot(epochs, knn_layer[layer], color=c, marker="o", ms=3, label=f"{layer} (layer)")
            ax.plot(epochs, knn_map[layer], color=c, ls="--", label=f"{layer} ({method})")
        if val_accuracy:
            xs = sorted(e for e in val_accuracy if e > 0)
            ax.plot(xs, [val_accuracy[e] for e in xs], color=LR_COLOR, lw=2, alpha=0.7, label="val accuracy")
        ax.set_xlabel("epoch")
        ax.set_ylabel("10-NN accuracy")
        ax.set_title("Separability of the validation sample, per layer")
        ax.legend(loc="lower right", ncols=2)
    return fig


STAT_TITLES = {"act_mean": "activation mean", "act_std": "activation std", "dead_fraction": "dead ReLU units",
               "weight_norm": "weight norm |W|", "bias_norm": "bias norm", "update_ratio": "update / weight |ΔW|/|W|"}


def stats_figure(epochs: Sequence[int], stats: Mapping[str, np.ndarray], stat_names: Sequence[str]):
    """Per-layer statistics over epochs: activation mean and std, dead units, weight norm, update ratio."""
    shown = ["act_mean", "act_std", "dead_fraction", "weight_norm", "update_ratio"]
    colors = ["#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377"]
    with styled():
        fig = new_figure(10, 5.2)
        axes = fig.subplots(2, 3).ravel()
        for ax, key in zip(axes, shown):
            j = list(stat_names).index(key)
            for i, (layer, values) in enumerate(stats.items()):
                ys = np.asarray(values)[:, j]
                if np.isfinite(ys).any():
                    ax.plot(epochs, ys, color=colors[i % len(colors)], marker="o", ms=2.5, label=layer)
            ax.set_title(STAT_TITLES[key])
            if key == "update_ratio":
                ax.set_yscale("log")
            if key == "dead_fraction":
                ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("epoch")
        axes[-1].axis("off")
        handles, labels = axes[0].get_legend_handles_labels()
        axes[-1].legend(handles, labels, loc="center", title="layer")
    return fig


# --- the report section ----------------------------------------------------------------------------------------

def section_html(*, gif: bytes | None, separability_png: bytes | None, stats_png: bytes | None,
                 rows: Sequence[Sequence[str]] = (), page_link: str | None = None, note: str | None = None) -> str:
    """Body of the report's "Training dynamics" section; every string from the run is escaped here."""
    esc = lambda v: html.escape(str(v), quote=True)  # noqa: E731
    out = []
    if note:
        out.append(f'<p class="muted">{esc(note)}</p>')
    if gif:
        uri = "data:image/gif;base64," + base64.b64encode(gif).decode("ascii")
        out.append(f'<figure><img src="{uri}" alt="hidden-layer maps of the validation sample, epoch by epoch" '
                   f'style="max-width:100%"><figcaption>Each map starts from the previous epoch\'s, so a point '
                   f'moves instead of jumping. Colour: true class.</figcaption></figure>')
    if page_link:
        out.append(f'<p><a href="{esc(page_link)}">Open the interactive page</a> (slider, play button, hover '
                   f'thumbnails, linked selection).</p>')
    if rows:
        head = "".join(f"<th>{esc(h)}</th>" for h in ("layer", "epochs", "10-NN acc. in layer (first → last)",
                                                      "in map (first → last)", "trustworthiness (last)",
                                                      "mean Procrustes disparity"))
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
        out.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
    for png, alt in ((separability_png, "10-NN accuracy per layer over epochs"),
                     (stats_png, "per-layer statistics over epochs")):
        if png:
            out.append(f'<figure><img src="{png_data_uri(png)}" alt="{esc(alt)}"></figure>')
    return "".join(out)


def scores_json(payload: dict) -> str:
    """JSON with NaN written as null (browsers and jq read it)."""
    def clean(v):
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(payload), indent=1) + "\n"
