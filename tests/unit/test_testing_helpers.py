"""`recstack.testing`: the helpers the integration / e2e tests and the benchmarks share."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from recstack.testing import ServerProcess, ServerStartError, free_ports, small_release_toml


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(4)
    assert len(set(ports)) == 4
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))  # raises if something holds it


def test_small_release_toml_is_a_build_config(tmp_path: Path) -> None:
    from recstack.release.build import BuildConfig

    cfg = tmp_path / "b.toml"
    cfg.write_text(small_release_toml(("pop", "ease")))
    bc = BuildConfig.from_toml(cfg)
    assert [m.name for m in bc.models] == ["pop", "ease"]
    assert bc.evaluation.enabled is False


def test_server_that_cannot_start_fails_with_its_output(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "no-releases", timeout=60)
    with pytest.raises(ServerStartError) as ei:
        srv.start()
    assert "did not become ready" in str(ei.value) and "production" in str(ei.value)  # its stderr
    assert srv.proc is None  # stopped and reaped
