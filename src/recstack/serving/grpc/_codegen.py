"""Generate the Python stubs of ``protos/*.proto`` with grpcio-tools (``python -m grpc_tools.protoc``).

The stubs are committed next to the protos; ``tests/unit/grpc/test_codegen.py`` regenerates them
into a temp dir and checks that they match byte for byte. After editing a proto run::

    python -m recstack.serving.grpc._codegen
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["PROTO_DIR", "SRC_ROOT", "generate", "proto_files", "stub_names"]

PROTO_DIR = Path(__file__).resolve().parent / "protos"
#: the ``src`` directory: protos import each other as ``recstack/serving/grpc/protos/<name>.proto``
SRC_ROOT = PROTO_DIR.parents[3]


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def stub_names() -> list[str]:
    """File names of the generated stubs (``x_pb2.py``, ``x_pb2.pyi``, ``x_pb2_grpc.py`` per proto)."""
    out: list[str] = []
    for p in proto_files():
        out += [f"{p.stem}_pb2.py", f"{p.stem}_pb2.pyi", f"{p.stem}_pb2_grpc.py"]
    return out


def generate(out_root: Path) -> Path:
    """Run protoc on every proto; stubs land in ``out_root/recstack/serving/grpc/protos``."""
    out_root.mkdir(parents=True, exist_ok=True)
    rel = [str(p.relative_to(SRC_ROOT)) for p in proto_files()]
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{SRC_ROOT}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *rel,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"protoc failed ({res.returncode}): {res.stderr.strip()}")
    return out_root / PROTO_DIR.relative_to(SRC_ROOT)


if __name__ == "__main__":  # pragma: no cover
    print(generate(SRC_ROOT))
