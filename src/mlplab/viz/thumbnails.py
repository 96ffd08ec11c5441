"""Tiny PNG thumbnails as data: URIs, one per sample, for hover tooltips in the explorer.

Kept at native resolution (28x28 MNIST is ~300 bytes of PNG) and scaled up by the browser with
`image-rendering: pixelated`, so 10,000 thumbnails add a few MB, not tens. Dark ink on white, like the
report's galleries (gallery.THUMB_CMAP = gray_r).
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np

MAX_SIDE = 64  # larger images are downsampled: a tooltip thumbnail never needs more


def _to_grey_u8(images: np.ndarray) -> np.ndarray | None:
    """(N, H, W[, C]) or (N, D) -> (N, h, w) uint8 with dark ink on white; None when rows are not images."""
    a = np.asarray(images)
    if a.ndim == 2:
        side = math.isqrt(a.shape[1])
        if side * side != a.shape[1]:
            return None  # tabular features: there is no picture to show
        a = a.reshape(len(a), side, side)
    elif a.ndim == 4 and a.shape[-1] in (1, 3, 4):
        a = a[..., :3].mean(axis=-1)
    elif a.ndim != 3:
        return None
    if a.dtype == np.uint8:
        grey = a
    else:
        a = a.astype(np.float32)
        top = 255.0 if float(np.nanmax(a, initial=0.0)) > 1.0 else 1.0
        grey = (np.clip(np.nan_to_num(a) / top, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return 255 - grey


def thumbnail_uris(images) -> list[str]:
    """One "data:image/png;base64,..." per sample; empty strings when the samples are not images."""
    from PIL import Image

    grey = _to_grey_u8(images)
    if grey is None:
        return [""] * len(images)
    uris = []
    for tile in grey:
        img = Image.fromarray(np.ascontiguousarray(tile))  # 2-D uint8 -> greyscale "L"
        if max(img.size) > MAX_SIDE:
            img.thumbnail((MAX_SIDE, MAX_SIDE))
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=False, compress_level=9)
        uris.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"))
    return uris
