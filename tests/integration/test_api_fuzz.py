"""schemathesis (every check) against a real ``recstack serve --workers 2``: more than 1,000 generated
requests with a fixed seed; no server error, no response that the OpenAPI schema does not describe,
schema-valid data accepted and invalid data refused. The deeper nightly-style run is
benchmarks/bench_fuzz.py."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recstack.serving.api.schemas import DAY
from recstack.testing import ServerProcess, build_small_release

pytestmark = [pytest.mark.slow, pytest.mark.ml100k]

#: per-operation settings (see the file): what the schema cannot say about one operation
CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = 17
EXAMPLES = 50  # per operation and phase: about 1,200 requests in all


def schemathesis_command(url: str, key: str, seed: int, examples: int, workers: int = 1) -> list[str]:
    exe = Path(sys.executable).parent / "st"
    return [
        str(exe) if exe.is_file() else "st",
        "--config-file",
        str(CONFIG),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--seed",
        str(seed),
        "--max-examples",
        str(examples),
        "--workers",
        str(workers),
        "--header",
        f"X-API-Key: {key}",
        "--generation-database",
        "none",
        "--request-timeout",
        "60",
        "--no-color",
    ]


def wait_past_midnight(margin: float = 600.0) -> None:
    """The newest event timestamp the server accepts steps once a day, at 00:00 UTC
    (`latest_timestamp`); schemathesis reads the schema's maximum once, at the start. A run that
    starts within ``margin`` seconds of the step waits until it has passed, so that the schema it
    read and the server agree for the whole run."""
    to_midnight = DAY - time.time() % DAY
    if to_midnight < margin:
        time.sleep(to_midnight + 1.0)


def test_schemathesis_every_check(tmp_path: Path) -> None:
    wait_past_midnight()
    root = tmp_path / "releases"
    build_small_release(root, ("pop", "itemknn"))
    with ServerProcess(root, workers=2, env={"RECSTACK_SERVE_API_KEY": "fuzz"}) as srv:
        res = subprocess.run(
            schemathesis_command(srv.url, "fuzz", SEED, EXAMPLES),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        server_log = srv.output(3000)
    out = res.stdout + res.stderr
    m = re.search(r"(\d+) generated, (\d+) passed", out)
    assert res.returncode == 0 and m is not None, out[-6000:] + "\n--- server log ---\n" + server_log
    generated, passed = int(m.group(1)), int(m.group(2))
    assert generated >= 1000 and passed == generated, out[-3000:]
    assert "Internal Server Error" not in server_log and "Traceback" not in server_log, server_log
