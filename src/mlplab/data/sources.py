"""The named datasets: what they are, where each is looked for, and how a missing one is downloaded.

Lookup order for a name (first hit wins):
  1. the data folder (load_dataset's data_dir, else $MLPLAB_DATA): NAME.npz or NAME/ with the IDX files
  2. mlplab's download cache ($XDG_CACHE_HOME/mlplab or ~/.cache/mlplab): NAME.npz (mnist) or NAME/*.gz
  3. Keras's cache ($KERAS_HOME/datasets or ~/.keras/datasets): mnist.npz, fashion-mnist/*.gz
  4. system packages (Debian's dataset-fashion-mnist: /usr/share/datasets/fashion-mnist/)
  5. torchvision's layout: MNIST/raw, FashionMNIST/raw, KMNIST/raw under the data folder or ./data
  6. a download from the mirrors into the cache (unless download=False)
Files in places that hold the published files byte for byte (2-4, and downloads) are checked against known
SHA-256 digests. The data folder and torchvision folders are the user's own copies, often decompressed, so
they get the structural checks only (IDX header against file size, label range, image size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlplab.data import locations, validate
from mlplab.data.dataset import Dataset
from mlplab.errors import MlplabError

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
IDX_ROLES = dict(zip(IDX_FILES, ("train_images", "train_labels", "test_images", "test_labels")))

# MNIST: Keras's mnist.npz (digest given in the issue, as published by Keras), and the four IDX files as
# served by ossci-datasets / cvdf-datasets (the same bytes as yann.lecun.com's originals).
MNIST_NPZ_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
MNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",),
    "train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",),
    "t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",),
    "t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",),
}
# Fashion-MNIST: two byte-different gzip encodings of the same images are in circulation. The first digest
# of each pair is Zalando's release (their S3 bucket, GitHub, Keras's mirror); the second is Debian's
# dataset-fashion-mnist package, computed from /usr/share/datasets/fashion-mnist/ (recompressed upstream files).
FASHION_IDX_SHA256 = {
    "train-images-idx3-ubyte.gz": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                                   "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
    "train-labels-idx1-ubyte.gz": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                                   "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
    "t10k-images-idx3-ubyte.gz": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                                  "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
    "t10k-labels-idx1-ubyte.gz": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                                  "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
}
# Kuzushiji-MNIST (ROIS-CODH): SHA-256 of the official IDX release as published in torchvision's dataset
# prototypes (their MD5s bdb82020..., e144d726..., 5c965bf0..., 7320c461... match torchvision's KMNIST).
KMNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte.gz": ("51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",),
    "train-labels-idx1-ubyte.gz": ("e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",),
    "t10k-images-idx3-ubyte.gz": ("edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",),
    "t10k-labels-idx1-ubyte.gz": ("20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",),
}

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# One hiragana from each row of the syllabary, romanised: お き す つ な は ま や れ を.
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
DIGIT_CLASSES = tuple(str(i) for i in range(10))


@dataclass(frozen=True)
class Named:
    name: str
    title: str
    class_names: tuple[str, ...]
    n_train: int
    n_test: int
    idx_sha256: dict = field(default_factory=dict)     # IDX file name -> accepted SHA-256 digests
    idx_mirrors: tuple[str, ...] = ()
    npz_file: str | None = None                        # a single-file copy (Keras's mnist.npz), tried first
    npz_sha256: str | None = None
    npz_mirrors: tuple[str, ...] = ()
    keras_name: str | None = None                      # file or folder name inside Keras's datasets folder
    torchvision_dir: str | None = None
    system_dirs: tuple[str, ...] = ()
    bundled: bool = False                              # ships with a dependency: never downloaded

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


NAMED: dict[str, Named] = {
    "mnist": Named(
        "mnist", "handwritten digits", DIGIT_CLASSES, 60_000, 10_000,
        idx_sha256=MNIST_IDX_SHA256,
        idx_mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                     "https://storage.googleapis.com/cvdf-datasets/mnist/",
                     "http://yann.lecun.com/exdb/mnist/"),
        npz_file="mnist.npz", npz_sha256=MNIST_NPZ_SHA256,
        npz_mirrors=("https://storage.googleapis.com/tensorflow/tf-keras-datasets/",),
        keras_name="mnist.npz", torchvision_dir="MNIST"),
    "fashion-mnist": Named(
        "fashion-mnist", "Zalando clothing", FASHION_CLASSES, 60_000, 10_000,
        idx_sha256=FASHION_IDX_SHA256,
        idx_mirrors=("https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
                     "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                     "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        keras_name="fashion-mnist", torchvision_dir="FashionMNIST",
        system_dirs=("/usr/share/datasets/fashion-mnist",)),
    "kmnist": Named(
        "kmnist", "Kuzushiji hiragana", KMNIST_CLASSES, 60_000, 10_000,
        idx_sha256=KMNIST_IDX_SHA256,
        idx_mirrors=("https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
                     "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"),
        torchvision_dir="KMNIST"),
    "digits": Named("digits", "8x8 digits (sklearn)", DIGIT_CLASSES, 1_437, 360, bundled=True),
}
ALIASES = {"fashion": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
           "fmnist": "fashion-mnist", "kuzushiji-mnist": "kmnist", "k-mnist": "kmnist"}


def canonical(name: str) -> str | None:
    """The registry key for a dataset name (case-insensitive, a few common aliases), or None."""
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    return key if key in NAMED else None


@dataclass(frozen=True)
class Place:
    """One place a named dataset may be found."""
    kind: str          # "data folder", "cache", "Keras cache", "system package", "torchvision folder"
    path: Path
    layout: str        # "npz": one file; "idx": a folder with the four IDX files
    verify: bool       # check the published SHA-256 digests

    def describe(self) -> str:
        return f"{self.kind} {self.path}"

    def files(self, named: Named) -> dict[str, Path] | None:
        """The files this place holds for the dataset by role, or None when it does not hold all of them."""
        if self.layout == "npz":
            return {"npz": self.path} if self.path.is_file() else None
        if not self.path.is_dir():
            return None
        if self.verify:  # published copies keep the published names
            found = {IDX_ROLES[f]: self.path / f for f in named.idx_sha256}
            return found if all(p.is_file() for p in found.values()) else None
        from mlplab.data.idx import find_idx_files

        try:
            found = find_idx_files(self.path)
        except (MlplabError, OSError):
            return None
        return found if len(found) == 4 else None


def places(named: Named, data_dir=None) -> list[Place]:
    """Every place the named dataset is looked for, in lookup order (download not included)."""
    out: list[Place] = []
    root = locations.data_dir(data_dir)
    root_kind = "data folder" if data_dir else "$MLPLAB_DATA"
    if root is not None:
        out += [Place(root_kind, root / f"{named.name}.npz", "npz", False),
                Place(root_kind, root / named.name, "idx", False)]
    cache = locations.cache_dir()
    if named.npz_file:
        out.append(Place("cache", cache / named.npz_file, "npz", True))
    out.append(Place("cache", cache / named.name, "idx", True))
    if named.keras_name:
        layout = "npz" if named.keras_name.endswith(".npz") else "idx"
        out.append(Place("Keras cache", locations.keras_datasets_dir() / named.keras_name, layout, True))
    out += [Place("system package", Path(d), "idx", True) for d in named.system_dirs]
    if named.torchvision_dir:
        bases = [root] if root is not None else []
        bases.append(Path("data"))
        out += [Place("torchvision folder", b / named.torchvision_dir / "raw", "idx", False) for b in bases]
    return out


def locate(name: str, data_dir=None) -> tuple[Place | None, dict | None]:
    """The first place that holds the whole dataset now (no hashing, no reading), and its files."""
    named = NAMED[canonical(name)]
    for place in places(named, data_dir):
        files = place.files(named)
        if files:
            return place, files
    return None, None


def _verify(named: Named, place: Place, files: dict[str, Path]) -> None:
    from mlplab.data import download as dl

    for role, path in files.items():
        accepted = (named.npz_sha256,) if role == "npz" else named.idx_sha256[path.name]
        digest = dl.sha256_file(path)
        if digest not in accepted:
            fix = ("reinstall the package" if place.kind == "system package"
                   else "delete it and mlplab will download it again" if place.kind == "cache"
                   else "delete it or set MLPLAB_DATA to another copy")
            raise MlplabError(f"{path}: SHA-256 {digest} is not the published {named.name} file "
                              f"(expected {' or '.join(accepted)}); {fix}")


def _read(named: Named, place: Place, files: dict[str, Path]) -> Dataset:
    from mlplab.data.idx import read_idx_folder
    from mlplab.data.npz import read_npz

    if place.verify:
        _verify(named, place, files)
    if "npz" in files:
        x, y, xt, yt, _ = read_npz(files["npz"])
        if xt is None:
            raise MlplabError(f"{files['npz']}: a named dataset file needs x_test and y_test")
        where = str(files["npz"])
    else:
        x, y, xt, yt = read_idx_folder(place.path, files)
        where = str(place.path)
    x, y = validate.pair(x, y, f"{where} (training part)", named.n_classes)
    xt, yt = validate.pair(xt, yt, f"{where} (test part)", named.n_classes)
    if x.shape[1:] != (28, 28) or xt.shape[1:] != (28, 28):
        raise MlplabError(f"{where}: {named.name} images must be 28x28, found {x.shape[1:]} and {xt.shape[1:]}")
    return Dataset(named.name, x, y, xt, yt, list(named.class_names), f"{place.describe()}")


def _download(named: Named, mirrors, progress) -> tuple[Place, dict[str, Path]]:
    """Fetch the dataset into the cache; the Keras-style single .npz first where there is one."""
    from mlplab.data import download as dl  # urllib and http.client only when something is downloaded

    override = locations.mirrors_override(mirrors)
    cache = locations.cache_dir()
    failures = []
    if named.npz_file:
        try:
            path = dl.fetch(named.npz_file, (named.npz_sha256,), override or named.npz_mirrors, cache,
                            progress=progress)
            return Place("cache", path, "npz", True), {"npz": path}
        except dl.DownloadError as exc:
            failures.append(exc.message)
    folder = cache / named.name
    files = {}
    try:
        for filename, digests in named.idx_sha256.items():
            files[IDX_ROLES[filename]] = dl.fetch(filename, digests, override or named.idx_mirrors, folder,
                                                  progress=progress)
    except dl.DownloadError as exc:
        failures.append(exc.message)
        raise MlplabError("; ".join(failures)) from exc
    return Place("cache", folder, "idx", True), files


def fetch_named(name: str, *, data_dir=None, download: bool = True, mirrors=None, progress=None):
    """(Place, files) of a named dataset, downloading it into the cache when it is nowhere on this machine."""
    named = NAMED[canonical(name)]
    place, files = locate(named.name, data_dir)
    if place is not None:
        return place, files
    looked = ", ".join(p.describe() for p in places(named, data_dir))
    if not download:
        raise MlplabError(f"{named.name} is not on this machine (looked in {looked}) and downloading is off")
    try:
        return _download(named, mirrors, progress)
    except MlplabError as exc:
        raise MlplabError(f"{named.name} is not on this machine (looked in {looked}) and the download "
                          f"failed: {exc.message}") from exc


def load_named(name: str, *, data_dir=None, download: bool = True, mirrors=None, progress=None,
               test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    named = NAMED[canonical(name)]
    if named.bundled:
        return load_digits(test_fraction=test_fraction, seed=seed)
    place, files = fetch_named(named.name, data_dir=data_dir, download=download, mirrors=mirrors,
                               progress=progress)
    return _read(named, place, files)


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 samples), split 80/20 stratified with a fixed seed."""
    from sklearn.datasets import load_digits as sk_digits

    from mlplab.data.split import split_off_test

    bunch = sk_digits()
    # Pixel values are 0..16; map them onto 0..255 so every image in mlplab has the same uint8 convention
    # and to_features scales them like any other dataset (the 17 levels stay distinct).
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    x, y, xt, yt, note = split_off_test(images, labels, test_fraction, seed)
    return Dataset("digits", x, y, xt, yt, list(DIGIT_CLASSES),
                   f"scikit-learn's bundled 8x8 digits (values 0-16 scaled to 0-255); {note}")
