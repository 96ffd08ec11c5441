"""Hidden activations of any layer, in inference mode, batched and memory-bounded.

The model computes every requested layer in one forward pass per batch (MLP.layer_outputs), so asking for
all layers costs the same as asking for the last. Results are preallocated once the first batch tells the
widths, so peak memory is the result plus one batch; with `out=FOLDER` the result itself lives on disk
(one .npy memmap per layer) and memory stays at one batch whatever N is.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from mlplab.errors import MlplabError

log = logging.getLogger(__name__)


def resolve_layers(model, layers="all", *, also: tuple[str, ...] = ()) -> list[str]:
    """Layer names to extract, in model order. "all" means every dense layer: at inference a dropout layer
    passes its input through unchanged, so its activations would duplicate the dense layer before it (ask for
    a dropout layer by name to get it anyway). Unknown names raise MlplabError listing the valid ones, with
    `also`: names the caller handles itself (embed's "input"), so that the message lists every choice."""
    valid = list(model.layer_names)
    choices = ", ".join(["all", *also, *valid])
    if isinstance(layers, str):
        if layers == "all":
            return [n for n in valid if not n.startswith("dropout")]
        layers = [s.strip() for s in layers.split(",") if s.strip()]
    layers = list(layers)
    if not layers:
        raise MlplabError(f"no layer given; choose from: {choices}")
    unknown = [n for n in layers if n not in valid]
    if unknown:
        raise MlplabError(f"unknown layer {unknown[0]!r}; choose from: {choices}")
    # Model order and no duplicates, whatever order the user typed them in.
    return [n for n in valid if n in set(layers)]


def _as_features(model, x) -> np.ndarray:
    import torch

    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim < 1 or len(x) == 0:
        raise MlplabError(f"expected a non-empty batch of samples with shape (N, ...), got shape {x.shape}")
    if x.ndim != 2:
        x = x.reshape(len(x), -1)  # images (N, H, W) -> (N, H*W); scaling is the caller's job (to_features)
    if x.shape[1] != model.input_dim:
        raise MlplabError(f"inputs have {x.shape[1]} features but the model expects {model.input_dim}")
    return x


def activations(model, x, layers="all", batch_size: int = 4096, out=None) -> dict[str, np.ndarray]:
    """{layer name: float32 (N, units)} for the inputs x (N, D), computed in inference mode.

    out=None keeps the arrays in memory. out=FOLDER streams each layer into FOLDER/<layer>.npy (a memmap,
    moved into place when complete) and returns read-only memmaps of those files.
    """
    import torch

    names = resolve_layers(model, layers)
    x = _as_features(model, x)
    if batch_size < 1:
        raise MlplabError(f"batch size must be at least 1, got {batch_size}")
    n = len(x)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    folder = Path(out) if out is not None else None
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MlplabError(f"cannot write activations to {folder}: {exc.strerror or exc}") from exc

    result: dict[str, np.ndarray] = {}
    tmp_paths: dict[str, Path] = {}
    was_training = model.training
    model.eval()  # dropout off; restored below so a caller mid-training is not surprised
    try:
        with torch.inference_mode():
            for start in range(0, max(n, 1), batch_size):
                xb = torch.as_tensor(np.ascontiguousarray(x[start:start + batch_size]), dtype=torch.float32)
                outs = model.layer_outputs(xb.to(device), names)
                for name in names:
                    block = outs[name].detach().to("cpu", torch.float32).numpy()  # (b, units)
                    if name not in result:
                        shape = (n, block.shape[1])
                        if folder is None:
                            result[name] = np.empty(shape, dtype=np.float32)
                        else:
                            tmp_paths[name] = folder / f".{name}.npy.tmp"
                            result[name] = np.lib.format.open_memmap(tmp_paths[name], mode="w+", dtype=np.float32,
                                                                     shape=shape)
                    result[name][start:start + len(block)] = block
    except BaseException as exc:
        for p in tmp_paths.values():
            p.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a read-only or full folder: one line, like every other write
            raise MlplabError(f"cannot write activations to {folder}: {exc.strerror or exc}") from exc
        raise
    finally:
        model.train(was_training)

    if folder is not None:
        for name, tmp in tmp_paths.items():
            result[name].flush()
            del result[name]  # close the memmap before the rename
            final = folder / f"{name}.npy"
            try:
                os.replace(tmp, final)
            except OSError as exc:
                raise MlplabError(f"cannot write {final}: {exc.strerror or exc}") from exc
            result[name] = np.load(final, mmap_mode="r", allow_pickle=False)
    log.debug("activations of %s for %d samples", names, n)
    return {name: result[name] for name in names}
