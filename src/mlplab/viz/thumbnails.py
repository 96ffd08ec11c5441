"""Tiny PNG thumbnails as data: URIs, one per sample, for hover tooltips in the explorer.

Kept at native resolution (28x28 MNIST is ~300 bytes of PNG) and scaled up by the browser with
`image-rendering: pixelated`, so 10,000 thumbnails add a few MB, not tens. Dark ink on white, like the
report's galleries (gallery.THUMB_CMAP = gray_r).
"""

from __future__ import annotations

import base64
import io
import math
import struct
import zlib

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
    grey = _to_grey_u8(images)
    if grey is None:
        return [""] * len(images)
    if max(grey.shape[1:]) > MAX_SIDE:
        return [_uri(_pil_png(tile)) for tile in grey]
    return [_uri(grey_png(tile)) for tile in grey]


def grey_png(tile: np.ndarray) -> bytes:
    """A 2-D uint8 array as an 8-bit greyscale PNG, written directly.

    Why not PIL: for 28x28 tiles its per-image overhead dominates the whole encoding (timings in
    docs/INTERNALS.md). The format is simple: IHDR, one zlib stream of rows each prefixed by filter type 0,
    IEND, each chunk with its CRC-32.
    """
    h, w = tile.shape
    rows = np.zeros((h, w + 1), dtype=np.uint8)  # (H, 1 + W): a 0 (no filter) byte before every row
    rows[:, 1:] = tile
    return (_PNG_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)) + _chunk(b"IEND", b""))


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _pil_png(tile: np.ndarray) -> bytes:
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(tile))  # 2-D uint8 -> greyscale "L"
    img.thumbnail((MAX_SIDE, MAX_SIDE))
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def _uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
