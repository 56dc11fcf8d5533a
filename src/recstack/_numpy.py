"""numpy helpers the whole package shares."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["distinct"]


def distinct(values: npt.ArrayLike) -> npt.NDArray[Any]:
    """The sorted distinct values of a 1-D array (``np.unique(values)``) by one sort and a mask.

    numpy 2.3+ computes a plain ``np.unique`` of integers with a hash table, which is slow on large
    arrays: 47.6 s against 0.35 s for this function on 25M user x item pair keys (162k x 62k, the
    ML-25M shape), 3.0 s against 0.37 s on 25M user ids (numpy 2.4.6, one core). Use it wherever the
    array grows with the interactions."""
    a = np.sort(np.asarray(values).ravel())
    if a.size == 0:
        return a
    keep = np.empty(a.size, dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]
