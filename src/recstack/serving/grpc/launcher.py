"""`recstack services start | status | stop`: one process per gRPC service.

Each service runs as ``python -m recstack.serving.grpc NAME ...`` in its own session; the run
directory (``$RECSTACK_HOME/run``, else ``~/.recstack/run``) holds ``NAME.pid``, ``NAME.json`` (pid,
host, port, release, log path) and ``NAME.log``. ``start`` returns once every service answers
SERVING on ``grpc.health.v1`` (or fails with the tail of the log); ``stop`` sends SIGTERM (the
server stops gracefully: calls in flight finish within the grace period) and SIGKILL only after a
timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recstack.errors import InvalidArgumentError, UnavailableError
from recstack.serving.grpc._common import DEFAULT_PORTS, SERVICE_NAMES, SERVICES

__all__ = [
    "ServiceInfo",
    "ServiceStatus",
    "default_run_dir",
    "health_check",
    "parse_ports",
    "read_info",
    "start_services",
    "status",
    "stop_services",
]


@dataclass(frozen=True)
class ServiceInfo:
    """A started service (``NAME.json`` in the run dir)."""

    name: str
    pid: int
    host: str
    port: int
    release: str
    log: str
    started_at: float

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    address: str
    running: bool
    health: str  #: SERVING, NOT_SERVING, UNKNOWN, UNREACHABLE or "-" (not started)
    release: str


def default_run_dir() -> Path:
    """``$RECSTACK_HOME/run`` when RECSTACK_HOME is set, else ``~/.recstack/run``."""
    home = os.environ.get("RECSTACK_HOME")
    return (Path(home) if home else Path.home() / ".recstack") / "run"


def parse_ports(text: str | None) -> dict[str, int]:
    """``user=8910,rank=9000`` -> the default ports with those replaced."""
    ports = dict(DEFAULT_PORTS)
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in ports or not value.isdigit() or not 0 < int(value) < 65536:
            raise InvalidArgumentError(
                f"bad --ports entry {part!r}; use name=port (1..65535) with name in {', '.join(SERVICES)}"
            )
        ports[key] = int(value)
    return ports


def _names(names: Iterable[str]) -> list[str]:
    wanted = list(dict.fromkeys(names)) or list(SERVICES)
    bad = [n for n in wanted if n not in SERVICE_NAMES]
    if bad:
        raise InvalidArgumentError(f"unknown service(s) {', '.join(bad)}; choose from {', '.join(SERVICES)}")
    return [n for n in SERVICES if n in wanted]  # dependencies first, the aggregator last


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie child of this process is reaped and counts as gone)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not our child: fall through to the signal-0 probe
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_info(run_dir: Path, name: str) -> ServiceInfo | None:
    p = run_dir / f"{name}.json"
    if not p.is_file():
        return None
    try:
        return ServiceInfo(**json.loads(p.read_text()))
    except (ValueError, TypeError):
        return None


def _forget(run_dir: Path, name: str) -> None:
    for suffix in (".json", ".pid"):
        (run_dir / f"{name}{suffix}").unlink(missing_ok=True)


def health_check(address: str, service: str = "", timeout: float = 1.0) -> str:
    """``grpc.health.v1`` status name of ``service`` at ``address`` (UNREACHABLE when it does not answer)."""
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        try:
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return "UNREACHABLE" if exc.code() in (grpc.StatusCode.UNAVAILABLE,) else exc.code().name
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))


def _tail(path: str, n: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def start_services(
    names: Iterable[str] = (),
    *,
    release: str | None = None,
    channel: str = "production",
    releases_dir: Path | None = None,
    ports: Mapping[str, int] | None = None,
    host: str = "127.0.0.1",
    run_dir: Path | None = None,
    hop_timeout_ms: float = 200.0,
    store: str = "embedded",
    redis_url: str | None = None,
    grace: float = 5.0,
    wait: float = 120.0,
    event_log: str | None = None,
) -> list[ServiceInfo]:
    """Start ``names`` (default: all five), each in its own process, on the same release; return
    once each answers SERVING. A service that is already running is an error (stop it first).
    ``event_log`` (a `recstack.events.open_log` URL): every release-backed service reads it, and
    the item service's ``AddItem`` records items there (its key: ``RECSTACK_SERVE_API_KEY`` in the
    environment, which the services inherit)."""
    from recstack.serving.settings import ServingSettings

    todo = _names(names)
    run = (run_dir or default_run_dir()).resolve()
    run.mkdir(parents=True, exist_ok=True)
    port_of = dict(ports or DEFAULT_PORTS)
    for n in todo:
        info = read_info(run, n)
        if info is not None and _alive(info.pid):
            raise InvalidArgumentError(
                f"service {n} already runs (pid {info.pid}, {info.address}); "
                f"`recstack services stop {n}` first"
            )
        _forget(run, n)
    # one release id for every service, resolved now (a channel could move while they start)
    settings = ServingSettings.model_validate(
        {"channel": channel, **({"release": release} if release else {}), "releases_dir": releases_dir}
    )
    rel_root = settings.releases_path().resolve()
    rid = "-"
    if any(n != "aggregator" for n in todo):
        from recstack.release.registry import Registry

        rid = Registry(rel_root).resolve(settings.target())
    # the aggregator calls running services where they run, else the configured ports
    upstreams: dict[str, str] = {}
    for n in ("user", "item", "recall", "rank"):
        info = read_info(run, n)
        upstreams[n] = info.address if info is not None and _alive(info.pid) else f"{host}:{port_of[n]}"
    started: list[ServiceInfo] = []
    try:
        for n in todo:
            cmd = [sys.executable, "-m", "recstack.serving.grpc", n]
            cmd += ["--host", host, "--port", str(port_of[n]), "--grace", str(grace)]
            if n == "aggregator":
                cmd += ["--upstreams", ",".join(f"{k}={v}" for k, v in upstreams.items())]
                cmd += ["--hop-timeout-ms", str(hop_timeout_ms)]
            else:
                cmd += ["--release", rid, "--releases-dir", str(rel_root), "--store", store]
                if redis_url:
                    cmd += ["--redis-url", redis_url]
                if event_log:
                    cmd += ["--event-log", event_log]
            log_path = run / f"{n}.log"
            with log_path.open("ab") as logf:
                proc = subprocess.Popen(
                    cmd,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            info = ServiceInfo(
                n, proc.pid, host, port_of[n], rid if n != "aggregator" else "-", str(log_path), time.time()
            )
            (run / f"{n}.pid").write_text(f"{proc.pid}\n")
            tmp = run / f".{n}.json.tmp"
            tmp.write_text(json.dumps(asdict(info)))
            os.replace(tmp, run / f"{n}.json")
            started.append(info)
        deadline = time.monotonic() + wait
        for info in started:
            while True:
                if not _alive(info.pid):
                    raise UnavailableError(
                        f"service {info.name} exited while starting; last lines of {info.log}:\n"
                        + _tail(info.log)
                    )
                if health_check(info.address, SERVICE_NAMES[info.name], timeout=0.5) == "SERVING":
                    break
                if time.monotonic() > deadline:
                    raise UnavailableError(
                        f"service {info.name} not SERVING after {wait:.0f}s; see {info.log}:\n"
                        + _tail(info.log)
                    )
                time.sleep(0.2)
    except BaseException:
        stop_services([i.name for i in started], run_dir=run, timeout=5.0)
        raise
    return started


def status(run_dir: Path | None = None) -> list[ServiceStatus]:
    """Every service: pid, address, process alive, health (``grpc.health.v1``)."""
    run = run_dir or default_run_dir()
    out: list[ServiceStatus] = []
    for n in SERVICES:
        info = read_info(run, n)
        if info is None:
            out.append(ServiceStatus(n, None, f"127.0.0.1:{DEFAULT_PORTS[n]}", False, "-", "-"))
            continue
        alive = _alive(info.pid)
        h = health_check(info.address, SERVICE_NAMES[n]) if alive else "UNREACHABLE"
        out.append(ServiceStatus(n, info.pid, info.address, alive, h, info.release))
    return out


def stop_services(
    names: Iterable[str] = (), *, run_dir: Path | None = None, timeout: float = 15.0
) -> list[str]:
    """SIGTERM each service started from ``run_dir`` (default: all), wait up to ``timeout`` seconds for
    its graceful stop, SIGKILL if it is still there; return the names stopped."""
    run = run_dir or default_run_dir()
    todo = list(reversed(_names(names)))  # the aggregator first
    stopped: list[str] = []
    pending: list[ServiceInfo] = []
    for n in todo:
        info = read_info(run, n)
        if info is None:
            continue
        if _alive(info.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGTERM)
            pending.append(info)
        else:
            _forget(run, n)
    deadline = time.monotonic() + timeout
    for info in pending:
        while _alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(info.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGKILL)
            while _alive(info.pid):
                time.sleep(0.05)
        _forget(run, info.name)
        stopped.append(info.name)
    return stopped
