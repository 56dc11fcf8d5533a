"""Reading model arrays without pickle (shared by the retrieval models)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recstack.errors import ArtifactError

__all__ = ["BLOCK_ENTRIES", "load_array", "load_sparse", "row_blocks"]

#: entries of one dense item-item block (n_items x block); 16M entries -> ~256 MB peak per float32 block
BLOCK_ENTRIES = 16 * 1024 * 1024


def row_blocks(n_items: int, entries: int = BLOCK_ENTRIES) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive row blocks of an ``n_items x n_items`` matrix, each holding at
    most ``entries`` entries (at least one row): memory stays bounded for any catalogue."""
    block = max(1, min(n_items, entries // max(n_items, 1)))
    for start in range(0, n_items, block):
        yield start, min(start + block, n_items)


def load_array(path: Path, shape: tuple[int | None, ...] | None = None) -> Any:
    """``np.load(path, allow_pickle=False)``; a missing or mis-shaped file is an `ArtifactError`.
    ``None`` in ``shape`` accepts any size on that axis."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot read model array ({exc}); re-save the model") from exc
    if shape is not None and (
        arr.ndim != len(shape) or any(s is not None and a != s for a, s in zip(arr.shape, shape, strict=True))
    ):
        raise ArtifactError(f"{path}: expected shape {shape}, found {arr.shape}; re-save the model")
    return arr


def load_sparse(path: Path, shape: tuple[int, int]) -> sp.csr_matrix:
    """``scipy.sparse.load_npz`` (which never unpickles) as CSR, shape-checked."""
    try:
        m = sp.load_npz(path).tocsr()
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot read sparse model matrix ({exc}); re-save the model") from exc
    if m.shape != shape:
        raise ArtifactError(f"{path}: expected shape {shape}, found {m.shape}; re-save the model")
    return m
