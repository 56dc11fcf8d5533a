"""Milvus backend through ``pymilvus.MilvusClient``.

``uri`` decides where the vectors live: a file path ending in ``.db`` starts embedded milvus-lite
(a local server binary shipped in the ``milvus-lite`` wheel, one per file and process); an
``http://``, ``https://``, ``tcp://`` or ``grpc://`` URI connects to a Milvus server or cluster.

Milvus reports the same scores as the other backends: ``IP`` inner product, ``COSINE`` cosine
similarity (both higher is better) and ``L2`` squared Euclidean distance (lower is better).
``save`` exports ids and vectors to ``.npy`` so that a saved index is self-contained; ``load``
re-attaches to the collection when it still holds the same number of rows, else re-inserts.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt
from pydantic import Field

from recstack.errors import ArtifactError, InvalidArgumentError, UnavailableError
from recstack.index.base import IndexConfig, Metric, VectorIndex

__all__ = ["MilvusIndex", "MilvusIndexConfig", "is_server_uri"]

_METRICS: dict[Metric, str] = {"ip": "IP", "cosine": "COSINE", "l2": "L2"}
_SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")
_NAME_RE = re.compile(r"[^A-Za-z0-9_]")
_MAX_TOPK = 16384


def is_server_uri(uri: str) -> bool:
    """True for a Milvus server URI, False for a milvus-lite file path."""
    return uri.startswith(_SERVER_SCHEMES)


class MilvusIndexConfig(IndexConfig):
    """Milvus connection, collection and index parameters.

    ``collection`` defaults to ``<collection_prefix>_<random hex>``; other characters than letters,
    digits and ``_`` are replaced by ``_``. ``index_type`` / ``index_params`` / ``search_params`` are
    passed to Milvus as is (milvus-lite accepts FLAT, IVF_FLAT, HNSW and AUTOINDEX).
    """

    backend: Literal["milvus"] = "milvus"
    uri: str = "./milvus.db"
    token: str = ""
    db_name: str = ""
    collection: str | None = None
    collection_prefix: str = "recstack"
    drop_existing: bool = False
    index_type: str = "HNSW"
    index_params: dict[str, Any] = Field(default_factory=lambda: {"M": 16, "efConstruction": 128})
    search_params: dict[str, Any] = Field(default_factory=lambda: {"ef": 64})
    insert_batch: int = Field(default=5000, ge=1)
    search_batch: int = Field(default=256, ge=1)
    timeout: float | None = Field(default=60.0, gt=0)


class MilvusIndex(VectorIndex):
    """A Milvus collection ``(id INT64 primary key, vector FLOAT_VECTOR[dim])``."""

    backend: ClassVar[str] = "milvus"
    config_class: ClassVar[type[IndexConfig]] = MilvusIndexConfig
    config: MilvusIndexConfig

    def __init__(self, config: MilvusIndexConfig, *, _attach: bool = False) -> None:
        if config.collection is None:
            config = config.model_copy(
                update={"collection": f"{_sanitise(config.collection_prefix)}_{uuid.uuid4().hex[:12]}"}
            )
        else:
            config = config.model_copy(update={"collection": _sanitise(config.collection)})
        if not is_server_uri(config.uri) and not config.uri.endswith(".db"):
            raise InvalidArgumentError(
                f"milvus uri {config.uri!r}: a milvus-lite file path must end in '.db' "
                "(or pass an http(s):// / tcp:// URI of a Milvus server)"
            )
        super().__init__(config)
        self._client = _connect(config)
        self._size = 0
        #: seconds a search may take (`set_query_timeout`); None: the config's ``timeout``
        self._query_timeout: float | None = None
        name = self.collection
        exists = bool(self._client.has_collection(name))
        if exists and (config.drop_existing and not _attach):
            self._client.drop_collection(name)
            exists = False
        if exists:
            self._check_schema()
            self._size = self._count()
        else:
            self._create()

    # ------------------------------------------------------------------ collection management
    @property
    def collection(self) -> str:
        assert self.config.collection is not None
        return self.config.collection

    @property
    def client(self) -> Any:
        """The ``pymilvus.MilvusClient`` (shared per URI inside one process)."""
        return self._client

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        params = self._client.prepare_index_params()
        params.add_index(
            field_name="vector",
            index_type=self.config.index_type,
            metric_type=_METRICS[self.metric],
            params=dict(self.config.index_params),
        )
        try:
            self._client.create_collection(
                self.collection,
                schema=schema,
                index_params=params,
                consistency_level="Strong",
                timeout=self.config.timeout,
            )
        except Exception as exc:  # pymilvus raises MilvusException with a server message
            raise InvalidArgumentError(
                f"milvus: cannot create collection {self.collection!r} with index "
                f"{self.config.index_type} {self.config.index_params}: {exc}"
            ) from exc

    def _check_schema(self) -> None:
        desc = self._client.describe_collection(self.collection)
        fields = {f["name"]: f for f in desc["fields"]}
        vec = fields.get("vector")
        if vec is None or "id" not in fields:
            raise InvalidArgumentError(
                f"milvus collection {self.collection!r} exists but is not a recstack index "
                "(fields id, vector); pick another collection name or set drop_existing=true"
            )
        if int(vec["params"]["dim"]) != self.dim:
            raise InvalidArgumentError(
                f"milvus collection {self.collection!r} has dim {vec['params']['dim']}, not {self.dim}; "
                "pick another collection name or set drop_existing=true"
            )
        self._client.load_collection(self.collection)

    def _count(self) -> int:
        res = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def drop(self) -> None:
        """Drop the collection (its data is gone); the object is empty afterwards."""
        self._client.drop_collection(self.collection)
        self._size = 0
        self._create()

    def close(self) -> None:
        """Close the client connection (milvus-lite stops its server when the last client closes)."""
        self._client.close()

    # ------------------------------------------------------------------ contract
    def __len__(self) -> int:
        return self._size

    def _contains_any(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        if self._size == 0:
            return ids[:0]
        found: list[int] = []
        for start in range(0, len(ids), self.config.insert_batch):
            chunk = ids[start : start + self.config.insert_batch]
            lo, hi = int(chunk.min()), int(chunk.max())
            # a range filter is cheap on the primary key; exact membership is checked in numpy
            res = self._client.query(
                self.collection, filter=f"id >= {lo} and id <= {hi}", output_fields=["id"]
            )
            got = np.fromiter((int(r["id"]) for r in res), dtype=np.int64, count=len(res))
            found.extend(chunk[np.isin(chunk, got)].tolist())
        return np.asarray(found, dtype=np.int64)

    def _add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        for start in range(0, len(ids), self.config.insert_batch):
            sl = slice(start, start + self.config.insert_batch)
            rows = [{"id": int(i), "vector": v} for i, v in zip(ids[sl].tolist(), vectors[sl], strict=True)]
            try:
                self._client.insert(self.collection, rows, timeout=self.config.timeout)
            except Exception as exc:
                raise UnavailableError(f"milvus insert into {self.collection!r} failed: {exc}") from exc
            self._size += len(rows)

    def set_query_timeout(self, seconds: float) -> None:
        """Searches time out after ``seconds`` (the config's ``timeout`` stays for inserts and loads)."""
        self._query_timeout = float(seconds)

    def _search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        kk = min(k, self._size, _MAX_TOPK)
        n = queries.shape[0]
        scores = np.empty((n, kk), dtype=np.float32)
        ids = np.full((n, kk), -1, dtype=np.int64)
        sp = {"metric_type": _METRICS[self.metric], "params": dict(self.config.search_params)}
        for start in range(0, n, self.config.search_batch):
            q = queries[start : start + self.config.search_batch]
            try:
                res = self._client.search(
                    self.collection,
                    data=list(q),
                    limit=kk,
                    output_fields=["id"],
                    search_params=sp,
                    timeout=self._query_timeout or self.config.timeout,
                )
            except Exception as exc:
                raise UnavailableError(f"milvus search in {self.collection!r} failed: {exc}") from exc
            for r, hits in enumerate(res):
                row = start + r
                m = len(hits)
                ids[row, :m] = [h["id"] for h in hits]
                scores[row, :m] = [h["distance"] for h in hits]
        return scores, ids

    def iter_vectors(
        self, batch: int = 10000
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        """Every ``(ids[b], vectors[b, dim])`` of the collection in batches (order unspecified)."""
        it = self._client.query_iterator(
            self.collection, batch_size=batch, filter="", output_fields=["id", "vector"]
        )
        try:
            while True:
                rows = it.next()
                if not rows:
                    break
                ids = np.fromiter((int(r["id"]) for r in rows), dtype=np.int64, count=len(rows))
                vecs = np.asarray([r["vector"] for r in rows], dtype=np.float32).reshape(len(rows), self.dim)
                yield ids, vecs
        finally:
            it.close()

    def _save(self, directory: Path) -> dict[str, Any]:
        id_parts: list[npt.NDArray[np.int64]] = [np.empty(0, dtype=np.int64)]
        vec_parts: list[npt.NDArray[np.float32]] = [np.empty((0, self.dim), dtype=np.float32)]
        for ids, vecs in self.iter_vectors():
            id_parts.append(ids)
            vec_parts.append(vecs)
        ids_all = np.concatenate(id_parts)
        order = np.argsort(ids_all, kind="stable")
        np.save(directory / "ids.npy", ids_all[order], allow_pickle=False)
        np.save(directory / "vectors.npy", np.concatenate(vec_parts)[order], allow_pickle=False)
        return {"server": is_server_uri(self.config.uri)}

    @classmethod
    def _load(cls, directory: Path, config: IndexConfig, meta: dict[str, Any]) -> Self:
        assert isinstance(config, MilvusIndexConfig)
        try:
            # memory-mapped: a process that re-attaches to the server's rows never reads the vectors
            ids = np.load(directory / "ids.npy", allow_pickle=False, mmap_mode="r")
            vecs = np.load(directory / "vectors.npy", allow_pickle=False, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{directory}: cannot read milvus index arrays: {exc}") from exc
        idx = cls(config, _attach=True)
        if len(idx) == len(ids):
            return idx  # the collection still holds the saved rows
        idx.drop()
        idx.add(ids, vecs)
        return idx


def _sanitise(name: str) -> str:
    out = _NAME_RE.sub("_", name)
    if not out or out[0].isdigit():
        out = "c_" + out
    return out[:255]


def _connect(config: MilvusIndexConfig) -> Any:
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise UnavailableError("the milvus backend needs pymilvus: pip install 'recstack[serve]'") from exc
    uri = config.uri
    if not is_server_uri(uri):
        Path(uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        uri = str(Path(uri).expanduser().resolve())
    try:
        return MilvusClient(uri=uri, token=config.token, db_name=config.db_name, timeout=config.timeout)
    except Exception as exc:
        where = "milvus-lite (embedded)" if not is_server_uri(uri) else "the Milvus server"
        raise UnavailableError(f"cannot connect to {where} at {uri!r}: {exc}") from exc
