"""Reading single images for `mlplab predict`: PNG/JPG (grayscale, resized to the model's input) and NPY."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlplab.errors import MlplabError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
# A picture is resized to the model's input size; beyond this much change of aspect ratio (a 10x300 strip for a
# square model) the result no longer looks like anything the model saw, so it is refused instead.
MAX_ASPECT_CHANGE = 4.0


def load_image(path, input_shape: tuple[int, ...], *, invert: bool = False, background=0.0,
               notes: list | None = None) -> np.ndarray:
    """One sample shaped like the training images: uint8 (H, W) for pictures, float32 for NPY arrays.

    background: the training data's background grey level (0..255; data.imagefolder.border_background), or a
    function returning it (called only for a picture with transparency). Transparent parts are composited onto
    it; --invert inverts the picture's grey levels before that, so a dark drawing on a transparent canvas
    becomes light ink on the (dark) background. A picture of another size is resized; `notes` (when given)
    receives a sentence saying so."""
    path = Path(path)
    if not path.is_file():
        raise MlplabError(f"{path} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = _load_npy(path, input_shape)
        return ((255 - arr) if arr.dtype == np.uint8 else (1.0 - arr)) if invert else arr
    if suffix in IMAGE_SUFFIXES:
        return _load_picture(path, input_shape, invert, background, notes)
    raise MlplabError(f"{path}: unsupported file type {suffix or '(none)'}; use .png, .jpg or .npy")


def _load_picture(path: Path, input_shape, invert: bool, background, notes: list | None = None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if len(input_shape) != 2:
        raise MlplabError(f"{path}: this model takes {int(np.prod(input_shape))} features, not images; "
                          "give a .npy file with one value per feature")
    from mlplab.data.imagefolder import check_image_size, decode_image, flatten, image_error, open_image_bytes

    try:
        with Image.open(open_image_bytes(path)) as img:
            check_image_size(img, path)
            img.load()
            gray, alpha = decode_image(img, path)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise MlplabError(f"{path} is not a readable image ({image_error(exc)})") from exc
    if invert:
        gray = 255.0 - gray
    if alpha is not None and callable(background):
        background = background()
    pixels = flatten(gray, alpha, float(background) if alpha is not None else 0.0)
    h, w = input_shape
    if pixels.shape != (h, w):
        gh, gw = pixels.shape
        change = (gw / gh) / (w / h)
        change = max(change, 1 / change)
        if change > MAX_ASPECT_CHANGE:
            raise MlplabError(f"{path} is {gw}x{gh} pixels; the model takes {w}x{h} images and squeezing it to "
                              f"that shape would distort it {change:.0f}-fold; crop it to about {w}:{h} first")
        if notes is not None:
            distort = f", aspect ratio {gw / gh:.2f} -> {w / h:.2f}" if change > 1.01 else ""
            notes.append(f"{path} is {gw}x{gh} pixels; resized to the model's {w}x{h}{distort}")
        pixels = np.asarray(Image.fromarray(pixels).resize((w, h), Image.Resampling.LANCZOS), dtype=np.uint8)
    return pixels


def _load_npy(path: Path, input_shape) -> np.ndarray:
    from mlplab.data.npz import npy_header

    try:
        with open(path, "rb") as fh:
            npy_header(fh, path.stat().st_size, str(path))  # before numpy allocates what the header claims
            fh.seek(0)
            arr = np.load(fh, allow_pickle=False)
    except MlplabError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise MlplabError(f"{path} is not a readable .npy array ({exc})".splitlines()[0]) from exc
    if arr.dtype.kind not in "uif" and arr.dtype != np.bool_:
        raise MlplabError(f"{path}: array dtype {arr.dtype} is not numeric")
    size = int(np.prod(input_shape))
    if arr.shape != tuple(input_shape) and arr.shape != (size,):
        expected = "x".join(map(str, input_shape))
        raise MlplabError(f"{path} has shape {arr.shape}; the model expects one {expected} image "
                          f"(or {size} values)")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.float32)
    # The same rule as for training data (data.validate.pixels, which also refuses NaN and infinities): whole
    # numbers 0..255 are 8-bit pixels and are divided by 255 like the training images were; anything else
    # must already be in [0, 1].
    from mlplab.data.validate import pixels

    arr = pixels(arr.reshape(1, -1), str(path))[0]
    if arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 1:
            raise MlplabError(f"{path}: float pixel values must be in [0, 1] (found {arr.min():g}..{arr.max():g}); "
                              "save uint8 0..255 or scale to [0, 1]")
    return arr.reshape(input_shape)
