"""`recstack._numpy.distinct` equals ``np.unique`` (values, order, dtype) for every input shape that
matters: empty, one value, repeats, negative values, high and low cardinality, other dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from recstack._numpy import distinct


@pytest.mark.parametrize(
    "values",
    [
        np.zeros(0, np.int64),
        np.array([7], np.int64),
        np.array([3, 3, 3], np.int64),
        np.array([5, -2, 5, 0, -2, 9], np.int64),
        np.random.default_rng(0).integers(0, 10**12, 50_000),  # pair keys: high cardinality
        np.random.default_rng(1).integers(0, 50, 50_000).astype(np.int32),  # user ids: low
        np.array([[4, 1], [1, 4]], np.int64),  # 2-D: flattened, as np.unique
        np.array([0.5, -1.0, 0.5, 2.0], np.float32),
    ],
)
def test_distinct_equals_np_unique(values: np.ndarray) -> None:
    got, want = distinct(values), np.unique(values)
    assert got.dtype == want.dtype and np.array_equal(got, want)
