"""NumPy .npz archives: keys x_train/y_train/x_test/y_test (Keras's mnist.npz) or x/y, never unpickled.

An optional `class_names` key (an array of strings, which needs no pickle) names the classes.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from mlplab.errors import MlplabError

SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path):
    """(x_train, y_train, x_test, y_test, class_names); the test pair and class_names may be None."""
    path = Path(path)
    try:
        # allow_pickle=False: an .npz can carry pickled objects, and unpickling runs code from the file.
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if set(SPLIT_KEYS[:2]) <= keys:
                x, y = z["x_train"], z["y_train"]
                if ("x_test" in keys) != ("y_test" in keys):
                    raise MlplabError(f"{path}: has only one of x_test and y_test; keys are {sorted(keys)}")
                xt, yt = (z["x_test"], z["y_test"]) if "x_test" in keys else (None, None)
            elif {"x", "y"} <= keys:
                x, y, xt, yt = z["x"], z["y"], None, None
            else:
                raise MlplabError(f"{path}: expected arrays x_train, y_train (and x_test, y_test) or x, y; "
                                  f"found {', '.join(sorted(keys)) or 'no arrays'}")
            names = z["class_names"] if "class_names" in keys else None
    except MlplabError:
        raise
    except ValueError as exc:
        # numpy raises ValueError for object arrays when allow_pickle=False, and for non-npy members.
        raise MlplabError(f"{path}: cannot read safely ({exc})") from exc
    except (zipfile.BadZipFile, EOFError) as exc:
        raise MlplabError(f"{path}: not a valid .npz file ({exc})") from exc
    except OSError as exc:
        raise MlplabError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise MlplabError(f"{path}: class_names must be a 1-D array of strings")
        names = [str(n) for n in names.tolist()]
    return x, y, xt, yt, names
