"""Item search (``GET /v1/search``): text-embedding similarity mixed with title match.

The query is encoded with the release's ONNX text encoder (`recstack.text.OnnxTextEncoder`, saved
with its ``content`` model) and compared with every item's text embedding (cosine); the title
match adds ``TITLE_WEIGHT`` when the whole query is a substring of the title, and a share of it for
the query's words found in the title. Popularity breaks ties (x 1e-6). A release without a content
model (or a server without ONNX Runtime / tokenizers) searches titles only: the answer says
``mode = "title"``.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from recstack.serving._catalog import Catalog

__all__ = ["SEARCH_MODELS", "TITLE_WEIGHT", "TextSearch", "item_text", "open_text_search"]

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]

#: retrievers whose model directory holds item text embeddings and the ONNX query encoder
SEARCH_MODELS = ("content", "content_userknn")
#: weight of a full title match next to the cosine similarity (in [-1, 1])
TITLE_WEIGHT = 0.5
_WORD = re.compile(r"\w+")


@dataclass
class SearchHit:
    items: IntArray
    scores: FloatArray
    mode: Literal["semantic", "title"]


def item_text(row: dict[str, Any]) -> str:
    """The text of an item added online (the same composition as the release's items)."""
    from recstack.text._texts import compose_text

    year = row.get("year")
    return compose_text(
        row.get("title"),
        int(year) if year is not None else None,
        row.get("genres") or (),
        text=row.get("text"),
    )


class TextSearch:
    """Search over one catalogue. ``embeddings`` [n_items, dim] (unit length) and ``encoder`` may be
    None (title match only). Items added online (`add`) are searchable at once."""

    def __init__(self, catalog: Catalog, embeddings: FloatArray | None, encoder: Any | None) -> None:
        self.catalog = catalog
        self.encoder = encoder if embeddings is not None else None
        self.embeddings = embeddings
        self._lock = threading.Lock()
        self._title_cache: tuple[Catalog, list[str], dict[str, list[int]]] | None = None
        #: nearest items by text embedding (similar items), grown by `add` (faiss ``add``)
        self.index: Any = None
        #: the mean embedding of the release's items (profiles of the ``new_items`` recall are centred)
        self.mean: FloatArray | None = None
        if embeddings is not None:
            self.index = _vector_index(embeddings)
            self.mean = embeddings.mean(axis=0).astype(np.float32)

    @property
    def semantic(self) -> bool:
        return self.encoder is not None and self.embeddings is not None

    def encode(self, texts: list[str]) -> FloatArray | None:
        """Query / item texts -> unit vectors [n, dim] (None without an encoder)."""
        return None if self.encoder is None else self.encoder.encode(texts)

    def add(self, vectors: FloatArray, catalog: Catalog) -> None:
        """Append the embeddings [m, dim] of the items appended to the catalogue (now ``catalog``):
        into the embeddings and the index (their ids follow the existing ones)."""
        with self._lock:
            if self.embeddings is not None:
                start = len(self.embeddings)
                self.embeddings = np.ascontiguousarray(np.vstack([self.embeddings, vectors]), np.float32)
                if self.index is not None:
                    self.index.add(np.arange(start, start + len(vectors), dtype=np.int64), vectors)
            self.catalog = catalog

    def similar(self, item_idx: int, k: int) -> tuple[IntArray, FloatArray]:
        """The ``k`` nearest items to one item by text embedding (itself excluded), through the
        index -> (items[<=k], cosine[<=k]), best first."""
        emb = self.embeddings
        if emb is None or self.index is None:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        sc, ids = self.index.search(emb[item_idx : item_idx + 1], k + 1)
        ok = (ids[0] >= 0) & (ids[0] != item_idx)
        return ids[0][ok][:k].astype(np.int64), sc[0][ok][:k].astype(np.float32)

    def _titles(self) -> tuple[list[str], dict[str, list[int]]]:
        """Lower-cased titles and the items of each title word (computed once per catalogue)."""
        cat = self.catalog
        cached = self._title_cache
        if cached is None or cached[0] is not cat:
            lower = [t.lower() if t else "" for t in cat.titles]
            words: dict[str, list[int]] = {}
            for i, t in enumerate(lower):
                for w in set(_WORD.findall(t)):
                    words.setdefault(w, []).append(i)
            cached = self._title_cache = (cat, lower, words)
        return cached[1], cached[2]

    def title_scores(self, q: str) -> FloatArray:
        """[n_items]: 1 when the whole query is a substring of the title, else half the share of
        the query's words found among the title's words."""
        lower, by_word = self._titles()
        ql = q.strip().lower()
        words = set(_WORD.findall(ql))
        out = np.zeros(len(lower), dtype=np.float32)
        for w in words:
            out[by_word.get(w, [])] += 0.5 / len(words)
        if ql:
            hit = self.catalog.titles_lower.str.contains(ql, literal=True).fill_null(False).to_numpy()
            out[hit[: len(out)]] = 1.0
        return out

    def search(self, q: str, k: int) -> SearchHit:
        """The best ``k`` items for query ``q`` -> item indices [<=k] and scores, best first."""
        cat = self.catalog
        n = cat.n_items
        score = TITLE_WEIGHT * self.title_scores(q)
        mode: Literal["semantic", "title"] = "title"
        emb = self.embeddings
        if self.semantic and emb is not None and q.strip():
            vec = self.encode([q])
            assert vec is not None
            sims = (emb[:n] @ vec[0]).astype(np.float32)
            score[: len(sims)] += sims
            mode = "semantic"
        elif not np.any(score):
            return SearchHit(np.zeros(0, np.int64), np.zeros(0, np.float32), mode)
        pop = cat.popularity
        tie = np.zeros(n, dtype=np.float32)
        tie[: len(pop)] = pop / max(float(pop.max()), 1.0) if len(pop) else 0.0
        total = score + np.float32(1e-6) * tie
        keep = np.flatnonzero(score > 0) if mode == "title" else np.arange(n)
        order = keep[np.lexsort((keep, -total[keep]))][:k]
        return SearchHit(order.astype(np.int64), total[order].astype(np.float32), mode)


def open_text_search(release: Any, catalog: Catalog) -> TextSearch:
    """The search of a release: the item embeddings and ONNX encoder of its first content model
    (`SEARCH_MODELS`) that has an encoder, else title match only."""
    models: dict[str, str] = {}
    arts = getattr(getattr(release, "manifest", None), "artifacts", None)
    if arts is not None and getattr(arts, "retriever_models", None):
        models = dict(arts.retriever_models)
    for alias in release.retriever_names:
        kind = models.get(alias, alias)
        if kind not in SEARCH_MODELS:
            continue
        try:
            retr = release.retriever(alias)
            emb = retr.item_embeddings()
            enc_dir = getattr(retr, "encoder_dir", None)
            if enc_dir is None:  # e.g. content_userknn, which leaves the encoder to `content`
                log.info("content model %r has no ONNX encoder: trying the next one", alias)
                continue
            from recstack.text.encoder import OnnxTextEncoder

            return TextSearch(catalog, np.asarray(emb, dtype=np.float32), OnnxTextEncoder(enc_dir))
        except (ImportError, OSError) as exc:
            log.warning("semantic search is off (%s): title search only", exc)
            return TextSearch(catalog, None, None)
    return TextSearch(catalog, None, None)


def _vector_index(embeddings: FloatArray) -> Any:
    """A `VectorIndex` over the item text embeddings: faiss (HNSW) when installed, else exact."""
    from recstack.index import create_index

    try:
        idx = create_index("faiss", dim=int(embeddings.shape[1]), metric="ip")
    except (ImportError, ValueError):
        idx = create_index("exact", dim=int(embeddings.shape[1]), metric="ip")
    idx.add(np.arange(len(embeddings), dtype=np.int64), embeddings)
    return idx
