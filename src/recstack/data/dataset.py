"""`Vocabulary` (external id <-> dense index) and `Dataset` (interactions + users + items).

Interactions are a polars table with the columns of `INTERACTION_SCHEMA`: dense user and item
indices (int32), the rating (float32; 1.0 for implicit data) and a Unix timestamp in seconds (int64).
The users table has a ``user`` index column plus attributes; the items table has an ``item`` index
column plus attributes (``title`` str, ``year`` int, ``genres`` list[str] where known).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp

from recstack.errors import ArtifactError, UnknownIdError

__all__ = ["INTERACTION_SCHEMA", "Dataset", "Vocabulary"]

INTERACTION_SCHEMA: dict[str, type[pl.DataType]] = {
    "user": pl.Int32,
    "item": pl.Int32,
    "rating": pl.Float32,
    "timestamp": pl.Int64,
}

Weighting = Literal["binary", "rating"]


@dataclass(frozen=True, eq=False)
class Vocabulary:
    """An ordered set of external ids; position = dense index.

    ``ids`` is a polars Series (Int64 or String). Lookups are vectorised.
    """

    name: str
    ids: pl.Series
    _index: dict[Any, int] = field(default_factory=dict, repr=False, compare=False)
    _integer: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.ids.n_unique() != len(self.ids):
            raise ValueError(f"vocabulary {self.name!r} has duplicate ids")
        self._index.update({v: i for i, v in enumerate(self.ids.to_list())})
        # asked on every lookup: a polars dtype query costs more than the dict lookup itself
        object.__setattr__(self, "_integer", self.ids.dtype.is_integer())

    @classmethod
    def from_values(cls, name: str, values: Iterable[Any] | pl.Series) -> Vocabulary:
        """Build from values in first-seen-sorted order (sorted ascending, for determinism)."""
        s = values if isinstance(values, pl.Series) else pl.Series(list(values))
        return cls(name, s.unique().sort().rename(name))

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, external: object) -> bool:
        return external in self._index

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Vocabulary)
            and self.name == other.name
            and self.ids.dtype == other.ids.dtype
            and self.ids.equals(other.ids)
        )

    def __hash__(self) -> int:
        return hash((self.name, len(self.ids)))

    @property
    def is_integer(self) -> bool:
        return self._integer

    def index(self, external: Any) -> int:
        """Dense index of one external id; `UnknownIdError` if absent."""
        key = self._coerce(external)
        try:
            return self._index[key]
        except KeyError:
            raise UnknownIdError(f"unknown {self.name} id {external!r}") from None

    def get(self, external: Any) -> int | None:
        """Dense index of one external id, or None."""
        try:
            return self._index.get(self._coerce(external))
        except (TypeError, ValueError):
            return None

    def indices(
        self, externals: Sequence[Any] | npt.ArrayLike, *, strict: bool = True
    ) -> npt.NDArray[np.int64]:
        """Dense indices of many ids; unknown ones raise (strict) or map to -1."""
        out = np.empty(len(externals), dtype=np.int64)  # type: ignore[arg-type]
        for j, e in enumerate(externals):  # type: ignore[arg-type]
            i = self.get(e)
            if i is None:
                if strict:
                    raise UnknownIdError(f"unknown {self.name} id {e!r}")
                i = -1
            out[j] = i
        return out

    def external(self, idx: npt.ArrayLike) -> list[Any]:
        """External ids of dense indices (-1 -> None)."""
        arr = np.asarray(idx, dtype=np.int64).ravel()
        vals = self.ids.to_list()
        return [vals[i] if i >= 0 else None for i in arr]

    def _coerce(self, external: Any) -> Any:
        if self._integer and not isinstance(external, (int, np.integer)):
            return int(str(external))
        if not self._integer and not isinstance(external, str):
            return str(external)
        return int(external) if isinstance(external, np.integer) else external

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame({"index": np.arange(len(self.ids), dtype=np.int32), "id": self.ids})


@dataclass(frozen=True, eq=False)
class Dataset:
    """Interactions with users, items and their vocabularies. Immutable; subsets share vocabularies."""

    name: str
    interactions: pl.DataFrame
    users: pl.DataFrame
    items: pl.DataFrame
    user_vocab: Vocabulary
    item_vocab: Vocabulary
    meta: dict[str, Any] = field(default_factory=dict)
    #: `to_csr`'s matrices by weighting (the dataset is immutable, so they never go stale; `replace`
    #: gives a new dataset an empty memo)
    _csr: dict[str, sp.csr_matrix] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        missing = [c for c in INTERACTION_SCHEMA if c not in self.interactions.columns]
        if missing:
            raise ValueError(f"interactions lack columns {missing}")
        if "user" not in self.users.columns or "item" not in self.items.columns:
            raise ValueError("users table needs a 'user' column and items table an 'item' column")

    # ------------------------------------------------------------------ sizes
    @property
    def n_users(self) -> int:
        return len(self.user_vocab)

    @property
    def n_items(self) -> int:
        return len(self.item_vocab)

    @property
    def n_interactions(self) -> int:
        return self.interactions.height

    # ----------------------------------------------------------- conversions
    def to_csr(self, weighting: Weighting = "binary") -> sp.csr_matrix:
        """User x item matrix [n_users, n_items], float32. Duplicate pairs are summed for
        ``rating`` and clipped to 1 for ``binary``.

        Built once per weighting and shared: every model fitted on this dataset (and the evaluation)
        gets the same matrix, whose arrays are read-only (copy it to change it). At 25M interactions
        building it takes about 20 s and 270 MB, once instead of twice per model fit."""
        memo = self._csr.get(weighting)
        if memo is not None:
            return memo
        u = self.interactions["user"].to_numpy()
        i = self.interactions["item"].to_numpy()
        if weighting == "binary":
            v = np.ones(len(u), dtype=np.float32)
        else:
            v = self.interactions["rating"].to_numpy().astype(np.float32)
        m = sp.csr_matrix((v, (u, i)), shape=(self.n_users, self.n_items), dtype=np.float32)
        m.sum_duplicates()
        if weighting == "binary":
            m.data[:] = 1.0
        m.has_canonical_format = True  # sorted indices, no duplicates: nothing sorts it in place later
        for a in (m.data, m.indices, m.indptr):
            a.flags.writeable = False
        self._csr[weighting] = m
        return m

    def with_interactions(self, interactions: pl.DataFrame, name: str | None = None) -> Dataset:
        """Same users, items and vocabularies; other interactions (used by splits)."""
        return replace(self, interactions=interactions, name=name or self.name)

    def item_genres(self) -> list[list[str]]:
        """Genres per item index (empty lists where unknown)."""
        if "genres" not in self.items.columns:
            return [[] for _ in range(self.n_items)]
        by_idx = dict(zip(self.items["item"].to_list(), self.items["genres"].to_list(), strict=True))
        return [list(by_idx.get(i) or []) for i in range(self.n_items)]

    def item_popularity(self) -> npt.NDArray[np.int64]:
        """Interaction count per item index [n_items]."""
        return np.bincount(self.interactions["item"].to_numpy(), minlength=self.n_items).astype(np.int64)

    # ------------------------------------------------------------ identity
    def fingerprint(self) -> str:
        """sha256 over the content (interactions, users, items, vocabularies), order-insensitive
        for interactions. Two datasets with the same content have the same fingerprint."""
        h = hashlib.sha256()
        inter = self.interactions.select(list(INTERACTION_SCHEMA)).sort(
            ["user", "item", "timestamp", "rating"]
        )
        for col in INTERACTION_SCHEMA:
            h.update(inter[col].to_numpy().tobytes())
        for frame in (self.users.sort("user"), self.items.sort("item")):
            h.update(_flatten_nested(frame).write_csv().encode())
        for vocab in (self.user_vocab, self.item_vocab):
            h.update("\x1f".join(map(str, vocab.ids.to_list())).encode())
        return h.hexdigest()

    # -------------------------------------------------------------- storage
    def save(self, directory: str | Path) -> Path:
        """Write as Parquet files plus ``dataset.json`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.interactions.write_parquet(d / "interactions.parquet")
        self.users.write_parquet(d / "users.parquet")
        self.items.write_parquet(d / "items.parquet")
        self.user_vocab.to_frame().write_parquet(d / "user_vocab.parquet")
        self.item_vocab.to_frame().write_parquet(d / "item_vocab.parquet")
        info = {"name": self.name, "fingerprint": self.fingerprint(), "meta": self.meta, "format": 1}
        (d / "dataset.json").write_text(json.dumps(info, indent=2, default=str))
        return d

    @classmethod
    def load(cls, directory: str | Path, *, verify: bool = False) -> Dataset:
        """Read a directory written by `save`. ``verify`` re-computes the fingerprint."""
        d = Path(directory)
        meta_path = d / "dataset.json"
        if not meta_path.is_file():
            raise ArtifactError(f"{meta_path}: not a saved recstack Dataset (dataset.json missing)")
        try:
            info = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{meta_path}: malformed JSON: {exc}") from exc
        ds = cls(
            name=str(info["name"]),
            interactions=pl.read_parquet(d / "interactions.parquet"),
            users=pl.read_parquet(d / "users.parquet"),
            items=pl.read_parquet(d / "items.parquet"),
            user_vocab=Vocabulary("user", pl.read_parquet(d / "user_vocab.parquet")["id"].rename("user")),
            item_vocab=Vocabulary("item", pl.read_parquet(d / "item_vocab.parquet")["id"].rename("item")),
            meta=dict(info.get("meta") or {}),
        )
        if verify and ds.fingerprint() != info.get("fingerprint"):
            raise ArtifactError(f"{d}: dataset fingerprint does not match dataset.json")
        return ds

    # ----------------------------------------------------------- building
    @classmethod
    def from_frames(
        cls,
        name: str,
        interactions: pl.DataFrame,
        users: pl.DataFrame | None = None,
        items: pl.DataFrame | None = None,
        *,
        user_col: str = "user_id",
        item_col: str = "item_id",
        meta: dict[str, Any] | None = None,
    ) -> Dataset:
        """Build from frames keyed by external ids.

        ``interactions`` has ``user_col``, ``item_col`` and optionally ``rating`` and ``timestamp``;
        ``users`` / ``items`` are keyed by the same external id columns. Vocabularies cover every id
        seen in any of the three tables (sorted ascending). Duplicate (user, item) pairs are kept:
        each is one interaction event (see `recstack.data.dedupe` for the policies).
        """
        if "rating" not in interactions.columns:
            interactions = interactions.with_columns(pl.lit(1.0).alias("rating"))
        if "timestamp" not in interactions.columns:
            interactions = interactions.with_columns(pl.lit(0).alias("timestamp"))
        user_ids = [interactions[user_col]]
        item_ids = [interactions[item_col]]
        if users is not None:
            user_ids.append(users[user_col])
        if items is not None:
            item_ids.append(items[item_col])
        user_vocab = Vocabulary.from_values("user", pl.concat(user_ids))
        item_vocab = Vocabulary.from_values("item", pl.concat(item_ids))
        umap = pl.DataFrame({user_col: user_vocab.ids, "user": np.arange(len(user_vocab), dtype=np.int32)})
        imap = pl.DataFrame({item_col: item_vocab.ids, "item": np.arange(len(item_vocab), dtype=np.int32)})
        inter = (
            interactions.join(umap, on=user_col, how="left")
            .join(imap, on=item_col, how="left")
            .select(
                pl.col("user").cast(pl.Int32),
                pl.col("item").cast(pl.Int32),
                pl.col("rating").cast(pl.Float32),
                pl.col("timestamp").cast(pl.Int64),
            )
        )
        if users is None:
            users_t = umap.select("user", pl.col(user_col).alias("external_id"))
        else:
            users_t = umap.join(users, on=user_col, how="left").rename({user_col: "external_id"})
        if items is None:
            items_t = imap.select("item", pl.col(item_col).alias("external_id"))
        else:
            items_t = imap.join(items, on=item_col, how="left").rename({item_col: "external_id"})
        return cls(name, inter, users_t, items_t, user_vocab, item_vocab, dict(meta or {}))


def _flatten_nested(frame: pl.DataFrame) -> pl.DataFrame:
    """List / array columns (genres, tags, genome) as joined strings, so that CSV can hash them."""
    nested = [c for c, t in frame.schema.items() if isinstance(t, (pl.List, pl.Array))]
    if not nested:
        return frame
    return frame.with_columns(pl.col(c).cast(pl.List(pl.String)).list.join("\x1f") for c in nested)
