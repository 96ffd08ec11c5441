"""load_dataset: one entry point for named datasets and for paths to .npz, CSV, IDX and image folders."""

from __future__ import annotations

from pathlib import Path

from mlplab.data import sources, validate
from mlplab.data.dataset import Dataset
from mlplab.errors import MlplabError

PATH_KINDS = ".npz file, .csv file, folder of IDX files, or folder of CLASS_NAME/ image folders"


def load_dataset(name_or_path, *, data_dir=None, download: bool = True, test_fraction: float = 0.2,
                 seed: int = 0, mirrors=None, progress=None) -> Dataset:
    """Load a named dataset (mnist, fashion-mnist, kmnist, digits) or a dataset file/folder.

    A name wins over a same-named folder in the current directory; write ./mnist to mean the folder.
    Data that comes without a test part gets a stratified test split of `test_fraction`, seeded by `seed`.
    `mirrors` (or $MLPLAB_MIRRORS) replaces the download mirrors; `progress(file, done, total)` is called
    while downloading.
    """
    if isinstance(name_or_path, str) and sources.canonical(name_or_path):
        return sources.load_named(name_or_path, data_dir=data_dir, download=download, mirrors=mirrors,
                                  progress=progress, test_fraction=test_fraction, seed=seed)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        names = ", ".join(sources.NAMED)
        raise MlplabError(f"unknown dataset {str(name_or_path)!r}: not one of {names}, and no file or folder "
                          f"by that name exists (a path may be a {PATH_KINDS})")
    return load_path(path, str(name_or_path), test_fraction=test_fraction, seed=seed)


def load_path(path: Path, name: str, *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    x, y, xt, yt, class_names, kind = _read_any(path)
    where = str(path)
    if xt is None:
        x, y = validate.pair(x, y, where, len(class_names) if class_names else None)
    else:
        x, y = validate.pair(x, y, f"{where} (training part)", len(class_names) if class_names else None)
        xt, yt = validate.pair(xt, yt, f"{where} (test part)", len(class_names) if class_names else None)
        validate.same_shape(x, xt, where)
        x, xt = validate.harmonize(x, xt)
    if not class_names:
        n = validate.class_count(y) if yt is None else validate.class_count(y, yt)
        class_names = [str(i) for i in range(n)]
    source = f"{kind} {path}"
    if xt is None:
        from mlplab.data.split import split_off_test

        x, y, xt, yt, note = split_off_test(x, y, test_fraction, seed)
        source += f"; {note}"
    return Dataset(name, x, y, xt, yt, list(class_names), source)


def _read_any(path: Path):
    """(x, y, x_test, y_test, class_names, kind) from whatever the path is; the test pair may be None."""
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix == ".npz":
            from mlplab.data.npz import read_npz

            return (*read_npz(path), ".npz file")
        if suffix in (".csv", ".txt"):
            from mlplab.data.csvfile import read_csv

            return (*read_csv(path), None, None, None, "CSV file")
        raise MlplabError(f"{path}: unsupported file type {suffix or '(no extension)'}; expected a {PATH_KINDS}")
    if path.is_dir():
        from mlplab.data import idx
        from mlplab.data.imagefolder import looks_like_image_folder, read_image_folder_splits

        files = idx.find_idx_files(path)
        if files:
            return (*idx.read_idx_folder(path, files), None, "IDX folder")
        csvs = _train_test_csv(path)
        if csvs:
            from mlplab.data.csvfile import read_csv

            return (*read_csv(csvs[0]), *read_csv(csvs[1]), None, "CSV files in")
        if looks_like_image_folder(path) or {p.name for p in path.iterdir() if p.is_dir()} == {"train", "test"}:
            return (*read_image_folder_splits(path), "image folder")
        raise MlplabError(f"{path}: found no dataset in this folder; expected IDX files "
                          f"(train-images-idx3-ubyte[.gz], ...), train/test CSV files, or CLASS_NAME/*.png folders")
    raise MlplabError(f"{path}: not a regular file or folder")


def _train_test_csv(folder: Path):
    """(train.csv, test.csv) when a folder holds exactly one of each (Kaggle's mnist_train.csv/mnist_test.csv)."""
    csvs = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".csv"]
    train = [p for p in csvs if "train" in p.name.lower()]
    test = [p for p in csvs if "test" in p.name.lower()]
    return (train[0], test[0]) if len(train) == 1 and len(test) == 1 else None
