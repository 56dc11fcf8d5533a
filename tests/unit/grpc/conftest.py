"""A tiny hand-checkable release for the gRPC tests, and all five services in process.

Items 100..107 (index 0..7): genres cycle Action, Comedy (index % 2), title "Movie <index>",
year 2000 + index. User u (ids 1..12, index u-1) interacted with items (u-1) % 8 and u % 8 at
times 100*u and 100*u + 1 (the second is the most recent); users 7..12 also with item 0 at time
100*u - 5 (when not already among the two). Popularity (distinct users): item 0 (id 100): 7 users
(1, 7, 8, 9, 10, 11, 12); items 1, 2, 3: 4 each; item 4: 3; items 5, 6, 7: 2 each. So the popular
order is 100, 101, ..., 107 (ties: lower index first).

The release has pop + itemknn and one ONNX ranker ``lin``: score = -iid (iid = item index + 1),
so the ranker prefers low item indices (-1 for item 100, -2 for 101...).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
import polars as pl
import pytest
from onnx import TensorProto, helper

from recstack.data.dataset import Dataset
from recstack.serving._release import MemoryRelease, fit_memory_release
from recstack.serving.grpc.server import RunningServer, make_servicer, start_server
from recstack.serving.grpc.services import ServiceState
from recstack.serving.pipeline import Pipeline, PipelineConfig, RerankConfig

N_ITEMS = 8
GENRES = ("Action", "Comedy")


def make_dataset() -> Dataset:
    rows: list[tuple[int, int, float, int]] = []
    for u in range(1, 13):
        rows.append((u, 100 + (u - 1) % 8, 4.0, 100 * u))
        rows.append((u, 100 + u % 8, 3.0, 100 * u + 1))
        if u >= 7 and 0 not in ((u - 1) % 8, u % 8):
            rows.append((u, 100, 5.0, 100 * u - 5))
    inter = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    items = pl.DataFrame(
        {
            "item_id": [100 + i for i in range(N_ITEMS)],
            "title": [f"Movie {i}" for i in range(N_ITEMS)],
            "year": [2000 + i for i in range(N_ITEMS)],
            "genres": [[GENRES[i % 2]] for i in range(N_ITEMS)],
        }
    )
    users = pl.DataFrame(
        {
            "user_id": list(range(1, 13)),
            "age": [20 + (u % 3) * 15 for u in range(1, 13)],
            "gender": ["M" if u % 2 else "F" for u in range(1, 13)],
            "occupation": ["student" if u <= 6 else "engineer" for u in range(1, 13)],
            "zip_code": [f"{u % 10}0000" for u in range(1, 13)],
        }
    )
    return Dataset.from_frames("tiny-grpc", inter, users, items)


def linear_ranker(path: Path, sign: float) -> Path:
    """ONNX ranker: score = sign * iid (iid = item index + 1)."""
    iid = helper.make_tensor_value_info("iid", TensorProto.INT64, ["n"])
    out = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"])
    nodes = [
        helper.make_node("Cast", ["iid"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["f", "w"], ["score"]),
    ]
    w = helper.make_tensor("w", TensorProto.FLOAT, [], [sign])
    graph = helper.make_graph(nodes, "ranker", [iid], [out], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def grpc_release(tmp_path_factory: pytest.TempPathFactory) -> MemoryRelease:
    rel = fit_memory_release(make_dataset(), "tiny-grpc-1", ("pop", "itemknn"))
    d = tmp_path_factory.mktemp("grpc-onnx")
    rel.ranker_paths = {"lin": linear_ranker(d / "lin.onnx", -1.0)}
    return rel


@pytest.fixture(scope="session")
def pipeline(grpc_release: MemoryRelease) -> Pipeline:
    # genre cap 2 so that the rerank stage changes orders in these tests
    return Pipeline(grpc_release, PipelineConfig(rerank=RerankConfig(genre_cap=2)))


@dataclass
class Cluster:
    servers: dict[str, RunningServer]

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.servers[name].port}"

    @property
    def addresses(self) -> dict[str, str]:
        return {n: self.address(n) for n in self.servers}


@pytest.fixture(scope="module")
def cluster(pipeline: Pipeline) -> Iterator[Cluster]:
    """The five services in this process, each on a free port; the aggregator's hop timeout is 2 s
    (generous: these tests check answers, the deadline tests use their own aggregator)."""
    state = ServiceState.of(pipeline)
    servers: dict[str, RunningServer] = {}
    try:
        for name in ("user", "item", "recall", "rank"):
            servers[name] = start_server(name, make_servicer(name, state), 0, workers=4)
        ups = {n: f"127.0.0.1:{s.port}" for n, s in servers.items()}
        servers["aggregator"] = start_server(
            "aggregator", make_servicer("aggregator", upstreams=ups, hop_timeout=2.0)
        )
        yield Cluster(servers)
    finally:
        for s in servers.values():
            s.stop(0)
