"""Activations and 2-D maps of a run directory: the library side of `mlplab activations` and `mlplab embed`.

Files written (atomically: temp file + rename) into RUN/embeddings (or another folder), named
<layer>-<method>[-<split>][-n<N>][-seed<S>] (or all-...): the split when it is not the test split, n when it is
not the default draw, the seed when not 0, so that maps of different samples never overwrite each other:
    .npz   coords_<layer> (N, 2) per layer, layers, labels, predictions, confidences, indices, quality arrays
    .json  method, split, n, seed and per-layer quality/seconds/note (read by the run report)
    .png   static scatter (one panel per layer)
    .html  interactive explorer (linked panels)
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlplab.atomic import atomic_write_bytes, atomic_write_text, temp_folder_beside, write_npz
from mlplab.runs.lock import inside, writes_run
from mlplab.errors import MlplabError
from mlplab.inspect.activations import activations, resolve_layers
from mlplab.inspect.embed import Embedding, embed, get_method
from mlplab.inspect.quality import quality

log = logging.getLogger(__name__)

INPUT = "input"           # the pseudo-layer of raw input features (pixels)
DEFAULT_EMBED_N = 10_000


@dataclass
class Samples:
    x: np.ndarray             # (n, D) float32 model inputs
    images: np.ndarray        # raw images, for thumbnails
    labels: np.ndarray        # (n,) int64
    indices: np.ndarray       # positions in the dataset's train or test arrays
    split: str


@dataclass
class LayerMap:
    layer: str
    embedding: Embedding
    quality: dict


@dataclass
class EmbedResult:
    maps: list[LayerMap]
    paths: dict[str, Path] = field(default_factory=dict)   # "npz" | "json" | "png" | "html" -> path
    n: int = 0
    split: str = "test"


def pick(n_available: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted positions of n samples drawn without replacement (all when n is None or equal to what exists)."""
    if n is None or n == n_available:
        return np.arange(n_available)
    if n < 1:
        raise MlplabError(f"--n must be at least 1, got {n}")
    if n > n_available:
        raise MlplabError(f"asked for {n} samples but the split has only {n_available}")
    return np.sort(np.random.default_rng(seed).choice(n_available, size=n, replace=False))


def load_samples(run, split: str, n: int | None, seed: int, cap: int | None = None) -> Samples:
    """n samples of a split (seeded); n=None takes all of them, or `cap` when the split is larger."""
    data = run.split(split)
    if n is None and cap is not None:
        n = min(cap, len(data.y))
    pos = pick(len(data.y), n, seed)
    return Samples(x=data.x[pos], images=data.images[pos], labels=data.y[pos], indices=data.indices[pos], split=split)


def dense_layers(model) -> list[str]:
    return resolve_layers(model, "all")


def default_layer(model) -> str:
    """The last hidden dense layer (the notebook's "last layer" picture). A model without hidden layers has
    no hidden features to map: rather than silently mapping something else, the user picks."""
    dense = dense_layers(model)
    if len(dense) < 2:
        raise MlplabError(f"this model has no hidden layer (its only dense layer, {dense[-1]}, is the output); "
                          f"choose --layer {INPUT} (the pixels), {dense[-1]} (the output) or all")
    return dense[-2]


def _predict(model, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, confidence) from the output layer's activations."""
    out = np.asarray(output, dtype=np.float64)
    if out.shape[1] == 1:  # one sigmoid unit: binary
        p = out[:, 0]
        return (p > 0.5).astype(np.int64), np.maximum(p, 1 - p)
    if getattr(model, "output_activation", "softmax") not in ("softmax", "sigmoid"):
        out = np.exp(out - out.max(axis=1, keepdims=True))  # scores -> probabilities for a confidence
        out /= out.sum(axis=1, keepdims=True)
    return out.argmax(axis=1).astype(np.int64), out.max(axis=1)


@writes_run("export activations", when=lambda run, out, **_: inside(out, run.path))
def export_activations(run, out, *, layers="all", split: str = "test", n: int | None = None, seed: int = 0,
                       batch_size: int = 4096) -> tuple[Path, list[str], int]:
    """Write an .npz with one array per layer plus labels, predictions, confidences and indices.

    Layers stream into memmaps in a temporary folder beside `out`, then are packed member by member, so
    memory stays at about one batch whatever N is. Returns (path, layer names, n).
    """
    model = run.model()
    names = resolve_layers(model, layers)
    output = dense_layers(model)[-1]
    samples = load_samples(run, split, n, seed)
    out = Path(out)
    with temp_folder_beside(out) as tmp:
        acts = activations(model, samples.x, sorted(set(names) | {output}, key=model.layer_names.index),
                           batch_size=batch_size, out=tmp)
        preds, conf = _predict(model, acts[output])
        arrays = {name: acts[name] for name in names}
        arrays.update(labels=samples.labels, predictions=preds, confidences=conf.astype(np.float32),
                      indices=samples.indices)
        write_npz(out, arrays)
    return out, names, len(samples.labels)


def resolve_embed_layers(model, layer: str | None) -> list[str]:
    if layer is None:
        return [default_layer(model)]
    if layer == "all":
        return [INPUT, *dense_layers(model)]
    parts = [s.strip() for s in layer.split(",") if s.strip()]
    names = [p for p in parts if p != INPUT]
    if not parts:
        resolve_layers(model, [], also=(INPUT,))  # raises: no layer given, with the choices
    resolved = resolve_layers(model, names, also=(INPUT,)) if names else []
    return ([INPUT] if INPUT in parts else []) + resolved


def map_stem(layers: str, method: str, split: str = "test", n: int | None = None, seed: int = 0) -> str:
    """The file stem of a map; `n` is None for the default draw. Test split, default n and seed 0 add nothing,
    so these maps keep the names they had before the split was part of the name."""
    stem = f"{layers}-{method}"
    if split != "test":
        stem += f"-{split}"
    if n is not None:
        stem += f"-n{n}"
    if seed:
        stem += f"-seed{seed}"
    return stem


@writes_run("embed")
def embed_run(run, *, layer: str | None = None, method: str = "tsne", n: int | None = None, split: str = "test",
              seed: int = 0, write_html: bool = True, write_png: bool = True, out_dir=None,
              **options) -> EmbedResult:
    """Embed the chosen layer(s) of a run for n samples of a split and write npz/json/png/html.

    layer: a layer name, a comma list, "input" (the model inputs) or "all" (input, every dense layer).
    n: None means up to DEFAULT_EMBED_N samples (all when the split is smaller); a number larger than
    the split is an error. out_dir: where to write (default RUN/embeddings), e.g. for a read-only run.
    """
    get_method(method)  # an unknown name fails here, before the model and data are loaded
    model = run.model()
    names = resolve_embed_layers(model, layer)
    output = dense_layers(model)[-1]
    samples = load_samples(run, split, n, seed, cap=DEFAULT_EMBED_N)
    wanted = [nm for nm in names if nm != INPUT]
    acts = activations(model, samples.x, sorted(set(wanted) | {output}, key=model.layer_names.index))
    preds, conf = _predict(model, acts[output])

    maps = []
    for name in names:
        feats = samples.x if name == INPUT else acts[name]
        emb = embed(feats, method, seed=seed, **options)
        q = quality(emb.coords, samples.labels, feats, seed=seed)
        log.info("%s: %s", name, q)
        maps.append(LayerMap(name, emb, q))

    count = len(samples.labels)
    default_count = min(DEFAULT_EMBED_N, len(run.split_indices(split)))
    stem = map_stem("all" if layer == "all" else "+".join(names), method, split,
                    None if n is None or count == default_count else count, seed)
    folder = Path(out_dir) if out_dir is not None else Path(run.embeddings_dir)
    result = EmbedResult(maps=maps, n=count, split=split)
    title = f"{run.name} · {split} split · {count:,} points" + (f" · seed {seed}" if seed else "")
    result.paths = write_maps(folder / stem, maps, samples, preds, conf, run.class_names, method=method,
                              title=title, seed=seed, write_png=write_png, write_html=write_html)
    return result


def write_maps(stem: Path, maps: list[LayerMap], samples: Samples, preds, conf, class_names, *, method: str,
               title: str, seed: int, write_png: bool = True, write_html: bool = True) -> dict[str, Path]:
    paths = {}
    arrays = {f"coords_{m.layer}": m.embedding.coords for m in maps}
    nan = float("nan")
    arrays.update(
        layers=np.array([m.layer for m in maps]),
        labels=samples.labels, predictions=preds, confidences=np.asarray(conf, dtype=np.float32),
        indices=samples.indices, class_names=np.array([str(c) for c in class_names]),
        knn_accuracy=np.array([m.quality["knn_accuracy"] if m.quality["knn_accuracy"] is not None else nan
                               for m in maps]),
        trustworthiness=np.array([m.quality["trustworthiness"] if m.quality["trustworthiness"] is not None
                                  else nan for m in maps]),
        seconds=np.array([m.embedding.seconds for m in maps]),
    )
    paths["npz"] = write_npz(stem.with_name(stem.name + ".npz"), arrays)
    meta = {"method": method, "split": samples.split, "n": int(len(samples.labels)), "seed": int(seed),
            "layers": {m.layer: {"quality": m.quality, "seconds": round(m.embedding.seconds, 3),
                                 "note": m.embedding.note, "params": m.embedding.params} for m in maps}}
    if len(maps) == 1:
        meta["quality"] = maps[0].quality  # the report shows this next to the picture
    paths["json"] = atomic_write_text(stem.with_name(stem.name + ".json"), json.dumps(meta, indent=2) + "\n")

    panels = {m.layer: m.embedding.coords for m in maps}
    qualities = {m.layer: m.quality for m in maps}
    seconds = {m.layer: m.embedding.seconds for m in maps}
    if write_png:
        from mlplab.viz.figures import figure_bytes
        from mlplab.viz.scatter import embedding_figure

        fig = embedding_figure(panels, samples.labels, class_names, predictions=preds, qualities=qualities,
                               seconds=seconds, method=method, title=title)
        paths["png"] = atomic_write_bytes(stem.with_name(stem.name + ".png"), figure_bytes(fig, "png"))
    if write_html:
        from mlplab.viz.explorer import explorer_html
        from mlplab.viz.thumbnails import thumbnail_uris

        page = explorer_html(panels, samples.labels, class_names, predictions=preds, confidences=conf,
                             indices=samples.indices, thumbnails=thumbnail_uris(samples.images),
                             qualities=qualities, seconds=seconds, method=method, title=title)
        paths["html"] = atomic_write_text(stem.with_name(stem.name + ".html"), page)
    return paths
