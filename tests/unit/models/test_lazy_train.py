"""Issue 23: a loaded retriever reads its training user x item matrix (``train.npz``) on first use
only. Serving scores from the users' histories (the store's), so a worker's retrievers kept a copy
of the release's interactions each that nothing read; the answers are unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from movies_data import movie_dataset
from recstack.errors import NotFittedError
from recstack.models.registry import create, get_class

MODELS = {"pop": {}, "als": {"factors": 4, "iterations": 3}, "itemknn": {}, "ease": {}, "rp3beta": {}}


@pytest.mark.parametrize("name", list(MODELS))
def test_loaded_retriever_reads_its_training_matrix_on_first_use(name: str, tmp_path: Path) -> None:
    ds = movie_dataset()
    fitted = create(name, **MODELS[name]).fit(ds)
    d = fitted.save(tmp_path / name)
    model = get_class(name).load(d)
    assert model._train is None  # not read at load
    history = sp.csr_matrix(ds.to_csr("binary")[[0, 2]])
    # scoring a history, similar items and recommendations from a history: still not read
    np.testing.assert_allclose(model.score_history(history), fitted.score_history(history), rtol=1e-5)
    for a, b in zip(model.similar_items([0, 1], 3), fitted.similar_items([0, 1], 3), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    assert model._train is None
    # known users' scores (read then where the model scores them from their training rows)
    np.testing.assert_allclose(model.score_users([0, 1]), fitted.score_users([0, 1]), rtol=1e-5)
    assert (model._require_fitted() != fitted._require_fitted()).nnz == 0  # read on demand: the same
    assert model._train is not None


def test_unfitted_retriever_still_says_so() -> None:
    with pytest.raises(NotFittedError):
        create("pop").score_history(sp.csr_matrix((1, 3), dtype=np.float32))
