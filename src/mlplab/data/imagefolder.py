"""A folder of images sorted into class folders: ROOT/CLASS_NAME/*.png|jpg, read as 8-bit grayscale.

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


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError  # Pillow only when images are actually read

    try:
        with Image.open(open_image_bytes(path)) as im:
            check_image_size(im, path)
            return np.asarray(im.convert("L"), dtype=np.uint8)
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
            img = _read_image(f)
            if shape is None:
                shape, first = img.shape, f
            elif img.shape != shape:
                raise MlplabError(f"{f}: image is {img.shape[1]}x{img.shape[0]} pixels but {first} is "
                                  f"{shape[1]}x{shape[0]}; all images must have one size")
            images.append(img)
            labels.append(label)
    if not images:
        raise MlplabError(f"{root}: no images found; expected CLASS_NAME/*.png or *.jpg inside")
    return np.stack(images), np.asarray(labels, dtype=np.int64), names


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
