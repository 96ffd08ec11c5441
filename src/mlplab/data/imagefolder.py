"""A folder of images sorted into class folders: ROOT/CLASS_NAME/*.png|jpg, read as 8-bit grayscale.

Every Pillow mode and bit depth is decoded by `decode_image` (16-bit scaled, never clipped) and transparent
pictures are composited onto the data's background by `flatten`; `mlplab predict` (data/inputs.py) uses both.

Class names are the folder names in sorted order (label i = i-th name), as in torchvision's ImageFolder.
A ROOT with exactly `train/` and `test/` inside, each laid out that way, gives both splits.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from mlplab.errors import MlplabError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff"}


def class_folders(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def looks_like_image_folder(root: Path) -> bool:
    for sub in class_folders(root):
        if any(f.suffix.lower() in EXTENSIONS for f in sub.iterdir() if f.is_file()):
            return True
    return False


# A small file can announce a huge picture (a "decompression bomb"); MNIST-like data never needs one this big.
MAX_IMAGE_PIXELS = 1 << 25  # 33.5 megapixels, e.g. 5792 x 5792


def check_image_size(im, path) -> None:
    """Refuse a picture whose header announces more pixels than mlplab reads, before it is decoded."""
    width, height = im.size
    if width * height > MAX_IMAGE_PIXELS:
        raise MlplabError(f"{path}: image is {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS:,} pixels "
                          "mlplab reads (a corrupt file or a decompression bomb?)")


def open_image_bytes(path: Path) -> io.BytesIO:
    """The file's bytes in memory, for Image.open. Pillow reads some chunks with fp.read(length as the file
    claims it), and a real file object allocates that length up front (a PNG chunk claiming 3 GB in a 100-byte
    file asks for 3 GB); a BytesIO hands back only the bytes that exist."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise MlplabError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if not data:
        raise MlplabError(f"{path} is empty (0 bytes), not an image")
    return io.BytesIO(data)


def image_error(exc: Exception) -> str:
    """Pillow's reason, on one line, for a file it could not read. Pillow names the stream it was given (a
    BytesIO here, see open_image_bytes), which means nothing to the user: the caller names the file."""
    import re

    from PIL import UnidentifiedImageError

    if isinstance(exc, UnidentifiedImageError):
        return "not a PNG, JPEG, BMP, GIF, TIFF or WebP file Pillow can identify"
    text = " ".join(str(exc).split())
    return re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the file", text) or type(exc).__name__


# Pillow modes whose pixels are wider than 8 bits: PNG's 16-bit grey arrives as "I;16" (or "I" from older
# Pillow and TIFF); convert("L") would clip every value above 255 to white, binarising the picture.
_WIDE_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
# Below this much grey-level spread a composited picture is flat: its colour carries no shape
_FLAT = 8.0


def decode_image(im, path) -> tuple[np.ndarray, np.ndarray | None]:
    """Grey levels as float64 (H, W) on the 0..255 scale, and opacity in [0, 1] (None when fully opaque).

    Every Pillow mode and bit depth is scaled by its own range: 1-bit 0/1 -> 0/255, 2/4-bit grey by Pillow,
    16-bit by value / 65535 * 255 (32-bit "I" must hold 16-bit values), float "F" must be in [0, 1]. Colour
    becomes grey with Pillow's ITU-R 601-2 weights; PNG tRNS transparency counts as an alpha channel.
    """
    mode = im.mode
    if mode in _WIDE_INT_MODES:
        raw = np.asarray(im).astype(np.float64)
        if raw.size and (raw.min() < 0 or raw.max() > 65535):
            raise MlplabError(f"{path}: {mode} pixels range {raw.min():g}..{raw.max():g}; mlplab reads integer "
                              "pictures of up to 16 bits (0..65535)")
        alpha = None
        if isinstance(im.info.get("transparency"), int):
            alpha = (raw != im.info["transparency"]).astype(np.float64)
        return raw / 65535.0 * 255.0, _alpha_or_none(alpha)
    if mode == "F":
        raw = np.asarray(im, dtype=np.float64)
        if raw.size and not (np.isfinite(raw).all() and raw.min() >= 0 and raw.max() <= 1):
            raise MlplabError(f"{path}: floating-point pixels must be in [0, 1]")
        return raw * 255.0, None
    if mode in _ALPHA_MODES or "transparency" in im.info:
        la = np.asarray(im.convert("RGBA").convert("LA"), dtype=np.float64)
        return la[..., 0], _alpha_or_none(la[..., 1] / 255.0)
    return np.asarray(im.convert("L"), dtype=np.float64), None


def _alpha_or_none(alpha):
    return None if alpha is None or alpha.min() >= 1.0 else alpha


def flatten(gray: np.ndarray, alpha: np.ndarray | None, background: float) -> np.ndarray:
    """Composite onto the data's background colour (0..255) and round to uint8.

    A picture drawn only in its alpha channel (ink the colour of the background, or no colour at all, as many
    drawing tools save a stroke on a transparent canvas) would come out blank: then the opacity is the shape,
    drawn in the opposite of the background (light ink on MNIST's dark background)."""
    if alpha is not None:
        out = alpha * gray + (1.0 - alpha) * background
        if np.ptp(out) < _FLAT <= np.ptp(alpha) * 255.0:
            out = background + alpha * (255.0 - 2.0 * background)
        gray = out
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)


def border_background(images) -> float:
    """The most common value of the pixels on the images' borders (0..255 scale): the data's background
    (0, dark, for MNIST-like data). Computed over at most 2,000 images."""
    x = np.asarray(images[:2000])
    if x.ndim != 3 or x.shape[1] < 1 or x.shape[2] < 1:
        return 0.0
    border = np.concatenate([x[:, 0, :].ravel(), x[:, -1, :].ravel(), x[:, :, 0].ravel(), x[:, :, -1].ravel()])
    if border.dtype != np.uint8:
        border = np.clip(np.rint(border.astype(np.float64) * (255.0 if border.max(initial=0) <= 1 else 1.0)),
                         0, 255).astype(np.uint8)
    return float(np.bincount(border, minlength=256).argmax())


def _read_image(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    from PIL import Image, UnidentifiedImageError  # Pillow only when images are actually read

    try:
        with Image.open(open_image_bytes(path)) as im:
            check_image_size(im, path)
            im.load()
            return decode_image(im, path)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError,
            EOFError) as exc:
        raise MlplabError(f"{path}: cannot read image ({image_error(exc)})") from exc


def read_image_folder(root, class_names: list[str] | None = None):
    """(x, y, class_names) from ROOT/CLASS/*.png; all images must have the same size."""
    root = Path(root)
    folders = class_folders(root)
    names = [p.name for p in folders] if class_names is None else list(class_names)
    if class_names is not None:
        extra = sorted({p.name for p in folders} - set(names))
        if extra:
            raise MlplabError(f"{root}: class folder(s) {', '.join(extra)} are not among the training classes "
                              f"({', '.join(names)})")
    images, labels, shape, first = [], [], None, None
    for folder in folders:
        label = names.index(folder.name)
        entries = sorted(folder.iterdir())
        # One level only: images in a subfolder would be silently left out (and a class folder holding only
        # subfolders would become a class without samples), so a nested folder is refused, by name.
        nested = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
        if nested:
            raise MlplabError(f"{nested[0]} is a folder inside class folder {folder.name!r}; an image folder is "
                              f"ROOT/CLASS_NAME/*.png, one level: move its images up into {folder} or remove it")
        if not any(f.is_file() and f.suffix.lower() in EXTENSIONS for f in entries):
            raise MlplabError(f"{folder}: class folder {folder.name!r} has no images (.png, .jpg, ...); a class "
                              f"needs samples: add some or remove the folder")
        for f in entries:
            if not f.is_file() or f.suffix.lower() not in EXTENSIONS:
                continue
            gray, alpha = _read_image(f)
            # opaque pictures are final now (uint8); transparent ones wait for the folder's background
            img = flatten(gray, None, 0.0) if alpha is None else (gray.astype(np.float32), alpha.astype(np.float32))
            if shape is None:
                shape, first = gray.shape, f
            elif gray.shape != shape:
                raise MlplabError(f"{f}: image is {gray.shape[1]}x{gray.shape[0]} pixels but {first} is "
                                  f"{shape[1]}x{shape[0]}; all images must have one size")
            images.append(img)
            labels.append(label)
    if not images:
        raise MlplabError(f"{root}: no images found; expected CLASS_NAME/*.png or *.jpg inside")
    # Transparent pictures are composited onto the folder's own background: the most common border value of
    # its opaque pictures (dark, 0, when every picture is transparent: mlplab's data is light on dark).
    opaque = [im for im in images if not isinstance(im, tuple)]
    background = border_background(np.stack(opaque)) if opaque else 0.0
    x = np.stack([flatten(*im, background) if isinstance(im, tuple) else im for im in images])
    return x, np.asarray(labels, dtype=np.int64), names


def read_image_folder_splits(root):
    """(x_train, y_train, x_test, y_test, class_names); the test pair is None without train/ and test/ folders."""
    root = Path(root)
    subs = {p.name for p in class_folders(root)}
    if subs == {"train", "test"}:
        x, y, names = read_image_folder(root / "train")
        xt, yt, _ = read_image_folder(root / "test", class_names=names)
        if xt.shape[1:] != x.shape[1:]:
            raise MlplabError(f"{root / 'test'}: images are {xt.shape[2]}x{xt.shape[1]} pixels but the training "
                              f"images are {x.shape[2]}x{x.shape[1]}")
        return x, y, xt, yt, names
    x, y, names = read_image_folder(root)
    return x, y, None, None, names
