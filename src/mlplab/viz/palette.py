"""Class colours readable with colour-blindness.

Paul Tol's "muted" scheme (9 colours + grey) is designed to stay distinguishable for the common forms of
colour-vision deficiency and in greyscale print; 10 classes (MNIST, Fashion-MNIST, digits) fit exactly.
Beyond 10 classes we fall back to matplotlib's tab20, which is less safe but still distinct.
"""

from __future__ import annotations

TOL_MUTED = [
    "#332288",  # indigo
    "#88CCEE",  # cyan
    "#44AA99",  # teal
    "#117733",  # green
    "#999933",  # olive
    "#DDCC77",  # sand
    "#CC6677",  # rose
    "#882255",  # wine
    "#AA4499",  # purple
    "#BBBBBB",  # grey
]

_TAB20 = [
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd", "#c5b0d5",
    "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5",
]

MISTAKE_COLOR = "#000000"  # outline for misclassified points


def class_colors(n_classes: int) -> list[str]:
    """One hex colour per class, colour-blind safe for up to 10 classes."""
    if n_classes <= len(TOL_MUTED):
        return TOL_MUTED[:n_classes]
    return [_TAB20[i % len(_TAB20)] for i in range(n_classes)]
