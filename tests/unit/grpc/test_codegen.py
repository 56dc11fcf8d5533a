"""The committed stubs are exactly what grpcio-tools generates from the protos (no drift), and every
response message carries the ``error`` envelope and the echoed ``log_id``."""

from __future__ import annotations

from pathlib import Path

import pytest

from recstack.serving.grpc import _codegen
from recstack.serving.grpc.protos import aggregator_pb2, item_pb2, rank_pb2, recall_pb2, user_pb2


def test_committed_stubs_match_protos(tmp_path: Path) -> None:
    out = _codegen.generate(tmp_path)
    names = _codegen.stub_names()
    assert len(names) == 3 * len(_codegen.proto_files()) == 18  # 6 protos x (pb2, pyi, grpc)
    generated = sorted(p.name for p in out.iterdir() if p.is_file())
    assert generated == sorted(names)
    stale = [n for n in names if _content(out / n) != _content(_codegen.PROTO_DIR / n)]
    assert not stale, f"stubs differ from the protos: {stale}; run python -m recstack.serving.grpc._codegen"


def _content(path: Path) -> list[str]:
    """A stub's lines without the generator's version stamp (``GRPC_GENERATED_VERSION = '1.85.1'``):
    a fresh install may have a newer grpcio-tools that writes the same code under another stamp."""
    return [ln for ln in path.read_text().splitlines() if not ln.startswith("GRPC_GENERATED_VERSION = ")]


def test_content_ignores_only_the_version_stamp(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text("import grpc\nGRPC_GENERATED_VERSION = '1.85.1'\nX = 1\n")
    b.write_text("import grpc\nGRPC_GENERATED_VERSION = '1.85.4'\nX = 1\n")
    c.write_text("import grpc\nGRPC_GENERATED_VERSION = '1.85.1'\nX = 2\n")
    assert _content(a) == _content(b) and _content(a) != _content(c)


def test_codegen_detects_a_changed_proto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the check above can fail: a proto with one more field gives different stubs
    src = tmp_path / "src"
    pdir = src / "recstack/serving/grpc/protos"
    pdir.mkdir(parents=True)
    for p in _codegen.proto_files():
        text = p.read_text()
        if p.name == "user.proto":
            text = text.replace("int32 history_limit = 3;", "int32 history_limit = 3;\n  bool extra = 4;")
        (pdir / p.name).write_text(text)
    monkeypatch.setattr(_codegen, "PROTO_DIR", pdir)
    monkeypatch.setattr(_codegen, "SRC_ROOT", src)
    out = _codegen.generate(tmp_path / "out")
    committed = Path(user_pb2.__file__).read_bytes()
    assert (out / "user_pb2.py").read_bytes() != committed


@pytest.mark.parametrize(
    "message",
    [
        user_pb2.UserResponse,
        item_pb2.ItemResponse,
        recall_pb2.RecallResponse,
        rank_pb2.RankResponse,
        aggregator_pb2.RecommendResponse,
    ],
)
def test_every_response_has_envelope_and_log_id(message: type) -> None:
    fields = message.DESCRIPTOR.fields_by_name  # type: ignore[attr-defined]
    assert fields["error"].message_type.full_name == "recstack.v1.Error"
    assert fields["log_id"].type == fields["log_id"].TYPE_STRING
    assert fields["release_id"].type == fields["release_id"].TYPE_STRING
