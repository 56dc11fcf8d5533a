"""Item search (``GET /v1/search``, the gRPC item service's ``Search``): a hybrid of meaning, words,
title and popularity.

Signals, each an array over the catalogue [n_items]:

- ``embed``: the cosine of the query's text embedding (the release's ONNX text encoder,
  `recstack.text.OnnxTextEncoder`, saved with its ``content`` model) with every item's;
- ``lexical``: BM25 (`bm25s`, English stop words removed, Snowball-stemmed by PyStemmer) over the
  item's title, year, genres, every user tag and its top genome tags (`recstack.text.item_texts`
  with all tags: the embedding text keeps the top 10);
- ``title``: 1 when the whole query is a substring of the title (so "shawsh" finds The Shawshank
  Redemption as it is typed), else half the share of the query's words among the title's;
- ``pop``: the item's popularity, log-scaled to [0, 1] (an item without any interaction yet, e.g.
  one added online, gets the median: unknown, not least popular);
- exact title: the items whose whole title is the query (`title_keys`) come first, then the items
  whose title holds the whole query (type-ahead: "shawsh"), then the rest (`rank`).

`SearchWeights` fuses them: ``rrf`` (the default) sums ``weight / (rrf_k + rank)`` over the rankings
by embed, lexical and title (each cut at ``depth``; lexical and title rank only items that match),
then multiplies by ``1 + pop_weight * pop`` (a prior: among matching items the popular ones, which
people look for most, go first; an item no list has stays out). ``weighted`` adds the signals
(lexical divided by its best score) with the same prior; ``legacy`` is the first version (embed +
0.5 title). The default was chosen on the dev half of benchmarks/data/search_queries.json
(benchmarks/bench_search.py; the held-out half is only reported). Items added online (`add`) are in
every signal at once but words: the BM25 index is rebuilt for the grown catalogue in the background
(about a second for 10K items) while title and meaning already find them.

Without a content model (or without ONNX Runtime / tokenizers) the search runs on words and titles
(``mode = "lexical"``; ``"title"`` when bm25s is not installed); it answers only matching items.
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

__all__ = [
    "DEFAULT_WEIGHTS",
    "SEARCH_MODELS",
    "TITLE_WEIGHT",
    "SearchWeights",
    "TextSearch",
    "item_text",
    "open_text_search",
]

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]

#: retrievers whose model directory holds item text embeddings and the ONNX query encoder
SEARCH_MODELS = ("content", "content_userknn")
#: weight of a full title match next to the cosine similarity (in [-1, 1]) in the ``legacy`` fusion
TITLE_WEIGHT = 0.5
_WORD = re.compile(r"\w+")
Mode = Literal["semantic", "lexical", "title"]


@dataclass(frozen=True)
class SearchWeights:
    """How the signals are fused (see the module docstring). ``depth``: how far down each ranking
    counts in ``rrf`` (and how many items by embedding may enter the answer at all)."""

    fusion: Literal["rrf", "weighted", "legacy"] = "rrf"
    embed: float = 1.0
    lexical: float = 1.0
    title: float = 1.0
    pop: float = 1.0
    rrf_k: float = 60.0
    depth: int = 200


#: chosen on the dev queries of benchmarks/bench_search.py (ml-latest-small: dev MRR 0.725 /
#: recall@10 0.716, held-out 0.705 / 0.853; the first version 0.402 / 0.559 and 0.361 / 0.539). The
#: popularity weight is the largest of the grid: the judged queries ask for well-known films
DEFAULT_WEIGHTS = SearchWeights(fusion="rrf", embed=2.0, lexical=2.0, title=0.5, pop=32.0, rrf_k=60.0)


@dataclass
class SearchHit:
    items: IntArray
    scores: FloatArray
    mode: Mode


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


class _Lexical:
    """BM25 over the catalogue's item texts (all tags); None when bm25s is not installed."""

    def __init__(self, catalog: Catalog) -> None:
        import bm25s

        from recstack.text._texts import item_texts

        self.catalog = catalog
        self.n = catalog.n_items
        self._stemmer = _stemmer()
        docs = item_texts(catalog.dataset, top_tags=1_000_000, top_genome=10)
        tokens = bm25s.tokenize(docs, stopwords="en", stemmer=self._stemmer, show_progress=False)
        self.bm25 = bm25s.BM25()
        self.bm25.index(tokens, show_progress=False)
        self._vocab: dict[str, int] = dict(tokens.vocab)

    def scores(self, q: str) -> FloatArray:
        """BM25 score of every item [n_items] (0: no query word in its text)."""
        import bm25s

        qt = bm25s.tokenize([q], stopwords="en", stemmer=self._stemmer, show_progress=False, return_ids=False)
        words = [w for w in qt[0] if w in self._vocab]
        if not words:
            return np.zeros(self.n, dtype=np.float32)
        return np.asarray(self.bm25.get_scores(words), dtype=np.float32)


def _stemmer() -> Any:
    try:
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:  # pragma: no cover - PyStemmer is a dependency; words then match exactly
        return None


class TextSearch:
    """Search over one catalogue. ``embeddings`` [n_items, dim] (unit length) and ``encoder`` may be
    None (words and title only). Items added online (`add`) are searchable at once."""

    def __init__(
        self,
        catalog: Catalog,
        embeddings: FloatArray | None,
        encoder: Any | None,
        weights: SearchWeights = DEFAULT_WEIGHTS,
    ) -> None:
        self.catalog = catalog
        self.encoder = encoder if embeddings is not None else None
        self.embeddings = embeddings
        self.weights = weights
        self._lock = threading.Lock()
        self._title_cache: tuple[Catalog, list[str], dict[str, list[int]]] | None = None
        self._exact_cache: tuple[Catalog, dict[str, list[int]]] | None = None
        self._prior_cache: tuple[Catalog, FloatArray] | None = None
        self._lexical: _Lexical | None = None
        self._lexical_lock = threading.Lock()
        #: False once bm25s turned out not to be installed
        self._has_lexical = True
        #: nearest items by text embedding (similar items), grown by `add` (faiss ``add``)
        self.index: Any = None
        #: the mean embedding of the release's items (profiles of the ``new_items`` recall are centred)
        self.mean: FloatArray | None = None
        if embeddings is not None:
            self.index = _vector_index(embeddings)
            self.mean = embeddings.mean(axis=0).astype(np.float32)
        self._builder: threading.Thread | None = None
        self._build_lexical()  # in the background: the first query waits for it at most

    def _build_lexical(self) -> None:
        """(Re)build the BM25 index of the current catalogue in a background thread; the index in
        use stays until the new one is ready (a query meanwhile scores the items added since as 0
        for words: their title and meaning still find them)."""
        if not self._has_lexical:
            return
        cat = self.catalog

        def run() -> None:
            try:
                lex = _Lexical(cat)
            except ImportError as exc:
                log.warning("lexical search is off (%s): install bm25s and PyStemmer", exc)
                self._has_lexical = False
                return
            except Exception:  # never leave the search without its other signals
                log.exception("building the BM25 index failed")
                return
            with self._lexical_lock:
                cur = self._lexical
                if cur is None or cur.n < lex.n:
                    self._lexical = lex

        t = threading.Thread(target=run, name="search-bm25", daemon=True)
        self._builder = t
        t.start()

    def wait_lexical(self, timeout: float | None = None) -> None:
        """Wait for the BM25 index being built (tests, benchmarks)."""
        t = self._builder
        if t is not None:
            t.join(timeout)

    @property
    def semantic(self) -> bool:
        return self.encoder is not None and self.embeddings is not None

    def encode(self, texts: list[str]) -> FloatArray | None:
        """Query / item texts -> unit vectors [n, dim] (None without an encoder)."""
        return None if self.encoder is None else self.encoder.encode(texts)

    def add(self, vectors: FloatArray | None, catalog: Catalog) -> None:
        """Append the embeddings [m, dim] of the items appended to the catalogue (now ``catalog``):
        into the embeddings and the index (their ids follow the existing ones); ``vectors`` None
        without an encoder. The BM25 index is rebuilt in the background."""
        with self._lock:
            if self.embeddings is not None and vectors is not None:
                start = len(self.embeddings)
                self.embeddings = np.ascontiguousarray(np.vstack([self.embeddings, vectors]), np.float32)
                if self.index is not None:
                    self.index.add(np.arange(start, start + len(vectors), dtype=np.int64), vectors)
            self.catalog = catalog
        self._build_lexical()

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

    def exact_titles(self, q: str) -> IntArray:
        """The items whose whole title is the query (`title_key`: case, punctuation, a trailing
        article "Matrix, The" and an alternative title in parentheses do not count)."""
        cat = self.catalog
        cached = self._exact_cache
        if cached is None or cached[0] is not cat:
            keys: dict[str, list[int]] = {}
            for i, t in enumerate(cat.titles):
                for key in title_keys(t or ""):
                    keys.setdefault(key, []).append(i)
            cached = self._exact_cache = (cat, keys)
        found = {i for key in title_keys(q) for i in cached[1].get(key, [])}
        return np.asarray(sorted(found), dtype=np.int64)

    def lexical_scores(self, q: str) -> FloatArray | None:
        """BM25 [n_items] (None without bm25s). The index is built in the background when the
        search opens and again when the catalogue grew (`add`); the first query waits for the
        first index, later ones use the latest ready one."""
        if self._lexical is None:
            self.wait_lexical()
        lex = self._lexical
        if lex is None or not self._has_lexical:
            return None
        return lex.scores(q)

    def signals(self, q: str) -> dict[str, FloatArray]:
        """The query's signals over the catalogue (those available): embed, lexical, title, pop."""
        n = self.catalog.n_items
        out: dict[str, FloatArray] = {}
        emb = self.embeddings
        if self.semantic and emb is not None:
            vec = self.encode([q])
            assert vec is not None
            e = np.zeros(n, dtype=np.float32)
            m = min(n, len(emb))
            e[:m] = emb[:m] @ vec[0]
            out["embed"] = e
        lex = self.lexical_scores(q) if self.weights.fusion != "legacy" else None
        if lex is not None:
            out["lexical"] = _fit(lex, n)
        out["title"] = _fit(self.title_scores(q), n)
        out["pop"] = self._prior(n)
        return out

    def _prior(self, n: int) -> FloatArray:
        """Log popularity in [0, 1] [n_items]; an item nobody has interacted with yet (an item added
        online) gets the median of the others: its popularity is unknown, not the lowest."""
        cached = self._prior_cache
        if cached is not None and cached[0] is self.catalog and len(cached[1]) == n:
            return cached[1]
        pop = _fit(self.catalog.popularity.astype(np.float32), n)
        top = float(pop.max()) if n else 0.0
        prior = (np.log1p(pop) / np.log1p(top)).astype(np.float32) if top > 0 else pop
        unseen = pop <= 0
        if unseen.any() and not unseen.all():
            prior[unseen] = np.float32(np.median(prior[~unseen]))
        self._prior_cache = (self.catalog, prior)
        return prior

    def search(self, q: str, k: int) -> SearchHit:
        """The best ``k`` items for query ``q`` -> item indices [<=k] and scores, best first."""
        if not q.strip():
            return SearchHit(np.zeros(0, np.int64), np.zeros(0, np.float32), "title")
        sig = self.signals(q)
        mode: Mode = "semantic" if "embed" in sig else "lexical" if "lexical" in sig else "title"
        score = fuse(sig, self.weights)
        legacy = self.weights.fusion == "legacy"
        order = (rank(score) if legacy else rank(score, *tiers(q, self, sig)))[:k]
        return SearchHit(order, score[order].astype(np.float32), mode)


_ARTICLE = re.compile(r"^(.*), (the|a|an|les|la|le|l'|il|el|der|die|das|los|las)$")
_NON_WORD = re.compile(r"[\W_]+")


def title_keys(title: str) -> set[str]:
    """Normalised forms of a title (or a query) that an exact title match compares: lower case,
    words only; "Matrix, The" also as "the matrix" and "matrix"; "Amelie (Fabuleux destin...)"
    also as "amelie" (MovieLens puts the original title in parentheses)."""
    t = title.strip().lower()
    heads = {t}
    if " (" in t:
        heads.add(t.split(" (", 1)[0])
    keys: set[str] = set()
    for h in heads:
        m = _ARTICLE.match(h.strip())
        forms = {h} if m is None else {f"{m.group(2)} {m.group(1)}", m.group(1)}
        for f in forms:
            words = _NON_WORD.sub(" ", f).split()
            if words:
                keys.add(" ".join(words))
                if words[0] in ("the", "a", "an") and len(words) > 1:
                    keys.add(" ".join(words[1:]))
    return keys


def rank(score: FloatArray, first: IntArray | None = None, then: IntArray | None = None) -> IntArray:
    """Items with ``score > 0``, best first (ties: lower index first); the items of ``first``
    (exact title matches) ahead of those of ``then`` (titles holding the whole query: what is being
    typed), ahead of the rest, each tier in score order."""
    keep = np.flatnonzero(score > 0)
    tier = np.zeros(len(score), dtype=np.int8)
    for level, items in ((1, then), (2, first)):
        if items is not None and len(items):
            tier[items] = level
            keep = np.union1d(keep, items)
    return keep[np.lexsort((keep, -score[keep], -tier[keep]))].astype(np.int64)


def tiers(q: str, search: TextSearch, sig: dict[str, FloatArray]) -> tuple[IntArray, IntArray]:
    """(exact title matches, titles holding the whole query) of `rank`."""
    return search.exact_titles(q), np.flatnonzero(sig["title"] >= 1.0).astype(np.int64)


def _fit(a: FloatArray, n: int) -> FloatArray:
    """``a`` cut or zero-padded to ``n`` (a catalogue that grew between two reads)."""
    if len(a) == n:
        return a
    out = np.zeros(n, dtype=np.float32)
    out[: min(n, len(a))] = a[:n]
    return out


def _rrf(values: FloatArray, depth: int, rrf_k: float, only_positive: bool) -> FloatArray:
    """``1 / (rrf_k + rank)`` for the ``depth`` best items by ``values`` (rank 1 = best), else 0."""
    n = len(values)
    out = np.zeros(n, dtype=np.float32)
    cand = np.flatnonzero(values > 0) if only_positive else np.arange(n)
    if not len(cand):
        return out
    if len(cand) > depth:
        cand = cand[np.argpartition(-values[cand], depth - 1)[:depth]]
    cand = cand[np.lexsort((cand, -values[cand]))]
    out[cand] = 1.0 / (rrf_k + np.arange(1, len(cand) + 1, dtype=np.float32))
    return out


def fuse(sig: dict[str, FloatArray], w: SearchWeights) -> FloatArray:
    """One score per item [n_items] from the signals (`TextSearch.signals`); > 0 = in the answer."""
    title = sig["title"]
    n = len(title)
    pop = sig["pop"]
    embed = sig.get("embed")
    lexical = sig.get("lexical")
    if w.fusion == "legacy":
        score = TITLE_WEIGHT * title
        tie = np.float32(1e-6) * pop
        if embed is not None:
            score = score + embed + np.float32(2.0)  # every item stays (cosine >= -1)
        else:
            tie = tie * (title > 0)
        return (score + tie).astype(np.float32)
    score = np.zeros(n, dtype=np.float32)
    if w.fusion == "rrf":
        if embed is not None and w.embed:
            score += np.float32(w.embed) * _rrf(embed, w.depth, w.rrf_k, only_positive=True)
        if lexical is not None and w.lexical:
            score += np.float32(w.lexical) * _rrf(lexical, w.depth, w.rrf_k, only_positive=True)
        if w.title:
            score += np.float32(w.title) * _rrf(title, w.depth, w.rrf_k, only_positive=True)
    else:  # weighted
        matched = title > 0
        if lexical is not None:
            best = float(lexical.max()) if n else 0.0
            if best > 0:
                score += np.float32(w.lexical / best) * lexical
            matched |= lexical > 0
        score += np.float32(w.title) * title
        if embed is not None and w.embed:
            near = _rrf(embed, w.depth, 1.0, only_positive=True) > 0
            score += np.float32(w.embed) * np.maximum(embed, 0) * near
            matched |= near
        score[~matched] = 0
    return (score * (1 + np.float32(w.pop) * pop)).astype(np.float32)


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
