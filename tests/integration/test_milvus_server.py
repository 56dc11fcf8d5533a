"""A Milvus *server* (milvus-lite's gRPC server on a TCP port, `recstack.testing.MilvusServer`, no
Docker) as the ANN index: several clients share one collection, and two ``recstack serve`` workers
with ``--store redis`` serve a release whose index lives on the server (attached, not re-inserted)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from conftest import require_service
from recstack.index import MilvusIndex, create_index, load_index
from recstack.index.milvus import MilvusIndexConfig
from recstack.testing import MilvusServer, ServerProcess, ServerStartError, build_release

pytestmark = [pytest.mark.slow, pytest.mark.milvus]


@pytest.fixture(scope="module")
def milvus() -> Iterator[MilvusServer]:
    server = MilvusServer()
    try:
        server.start()
    except ServerStartError as exc:
        require_service("milvus server", str(exc))
    try:
        yield server
    finally:
        server.stop()


def test_clients_share_a_collection_on_the_server(milvus: MilvusServer, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(2000, 16)).astype(np.float32)
    ids = np.arange(2000, dtype=np.int64) * 3  # not 0..n-1: ids come back as given
    exact = create_index("exact", 16, "ip")
    exact.add(ids, vecs)
    a = create_index(
        "milvus", 16, "ip", uri=milvus.uri, collection="wt_share", index_type="FLAT", index_params={}
    )
    assert isinstance(a, MilvusIndex)
    a.add(ids, vecs)
    saved = a.save(tmp_path / "idx")
    a.close()
    # another client (a serving worker) attaches to the rows on the server instead of inserting them
    b = load_index(saved)
    assert isinstance(b, MilvusIndex) and len(b) == 2000
    q = rng.normal(size=(20, 16)).astype(np.float32)
    np.testing.assert_array_equal(b.search(q, 10)[1], exact.search(q, 10)[1])  # FLAT: exact
    b.drop()


@pytest.mark.redis
@pytest.mark.ml100k
def test_two_workers_serve_with_redis_and_the_milvus_server(
    milvus: MilvusServer, tmp_path: Path, redis_url: str, redis_prefix: str, redis_client: Any
) -> None:
    root = tmp_path / "releases"
    toml = f"""
[dataset]
source = "ml-100k"
[evaluation]
enabled = false
[index]
backend = "milvus"
params = {{ uri = "{milvus.uri}", collection = "wt_serve" }}
[[models]]
name = "pop"
[[models]]
name = "als"
params = {{ factors = 16, iterations = 3 }}
"""
    rid = build_release(root, toml)
    env = {"RECSTACK_SERVE_REDIS_PREFIX": redis_prefix}
    args = ["--store", "redis", "--redis-url", redis_url]
    with ServerProcess(root, workers=2, args=args, env=env) as server, httpx.Client(base_url=server.url) as c:
        bodies = [c.get(f"/v1/users/{u}/recommendations", params={"k": 10}) for u in (1, 2, 3, 1, 2, 3)]
        assert all(r.status_code == 200 for r in bodies), [r.text for r in bodies]
        assert all(len(r.json()["items"]) == 10 and r.json()["release_id"] == rid for r in bodies)
    # both workers attached to the build's collection: one copy of the 1,682 vectors on the server
    check = MilvusIndex(MilvusIndexConfig(dim=16, uri=milvus.uri, collection="wt_serve"), _attach=True)
    assert len(check) == 1682
    check.drop()
    assert list(redis_client.scan_iter(match=f"{redis_prefix}:*", count=1000))  # the store is in Redis
