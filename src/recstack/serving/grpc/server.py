"""One gRPC service in one process: ``python -m recstack.serving.grpc SERVICE --port N ...``.

`recstack services start` runs this once per service. The process loads the release (user, item,
recall, rank: the same `build_state` as the REST API; the aggregator loads none), serves the
service plus ``grpc.health.v1.Health`` (SERVING once loaded), and on SIGTERM / SIGINT reports
NOT_SERVING and stops gracefully: ``server.stop(grace)`` lets calls in flight finish.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from recstack.errors import InvalidArgumentError, RecstackError
from recstack.serving.grpc._common import DEFAULT_PORTS, SERVICE_NAMES
from recstack.serving.grpc.services import (
    AggregatorServicer,
    ItemServicer,
    RankServicer,
    RecallServicer,
    ServiceState,
    UserServicer,
    add_servicer,
)
from recstack.serving.settings import ServingSettings

__all__ = ["RunningServer", "load_state", "main", "make_servicer", "parse_upstreams", "start_server"]

log = logging.getLogger(__name__)


@dataclass
class RunningServer:
    """A started server: the bound ``port`` and its health servicer."""

    name: str
    server: grpc.Server
    port: int
    health: Any
    servicer: Any

    def stop(self, grace: float = 5.0) -> None:
        """NOT_SERVING, then stop accepting calls and wait up to ``grace`` seconds for those in flight."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        close = getattr(self.servicer, "close", None)
        if close is not None:
            close()


def load_state(settings: ServingSettings, stop: threading.Event | None = None) -> ServiceState:
    """The release of ``settings`` with its pipeline (the REST API's `build_state`). With an event
    log (``settings.event_log``) the histories and the items added online (``AddItem`` of the item
    service, ``POST /v1/items``) are read from it, at start and then every
    ``settings.event_poll_s`` seconds until ``stop`` is set: every service of a release sees an
    item one service added. ``settings.api_key`` turns ``AddItem`` on."""
    from recstack.events import open_log
    from recstack.serving._state import build_state, default_loader

    release = default_loader(settings)(settings.target())
    event_log = open_log(settings.event_log)
    built = build_state(release, settings, prewarm=True, event_log=event_log)
    if built.feed is not None:
        _follow_log(built.feed, settings.event_poll_s, stop or threading.Event())
    return ServiceState.of(built.pipeline, event_log=event_log, api_key=settings.api_key)


def _follow_log(feed: Any, every: float, stop: threading.Event) -> None:
    """Read the event log's new events into the state (a daemon thread)."""

    def run() -> None:
        while not stop.wait(every):
            try:
                feed.catch_up()
            except Exception:  # a busy / unreachable log: try again at the next tick
                log.exception("reading the event log failed")

    threading.Thread(target=run, name="event-log-follower", daemon=True).start()


def make_servicer(
    name: str,
    state: ServiceState | None = None,
    upstreams: Mapping[str, str] | None = None,
    hop_timeout: float = 0.2,
) -> Any:
    """The servicer of service ``name``: release-backed ones need ``state``, the aggregator ``upstreams``."""
    if name == "aggregator":
        return AggregatorServicer(upstreams or {}, hop_timeout)
    if state is None:
        raise InvalidArgumentError(f"service {name} needs a release state")
    classes: dict[str, Any] = {
        "user": UserServicer,
        "item": ItemServicer,
        "recall": RecallServicer,
        "rank": RankServicer,
    }
    if name not in classes:
        raise InvalidArgumentError(f"unknown service {name!r}; choose from {', '.join(SERVICE_NAMES)}")
    return classes[name](state)


def start_server(
    name: str, servicer: Any, port: int = 0, host: str = "127.0.0.1", workers: int = 8
) -> RunningServer:
    """Serve ``servicer`` and the health service on ``host:port`` (0 = a free port) in background threads."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"grpc-{name}"))
    add_servicer(server, name, servicer)
    hs = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError as exc:
        raise InvalidArgumentError(f"cannot listen on {host}:{port} ({exc}); is the port in use?") from exc
    if bound == 0:
        raise InvalidArgumentError(
            f"cannot listen on {host}:{port}; is the port in use? choose another with --ports"
        )
    server.start()
    for svc in ("", SERVICE_NAMES[name]):
        hs.set(svc, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(name, server, bound, hs, servicer)


def parse_upstreams(text: str, host: str = "127.0.0.1") -> dict[str, str]:
    """``user=8910,item=host:8920`` -> {"user": "127.0.0.1:8910", "item": "host:8920", ...}; services
    not named get their default port on ``host``."""
    out = {n: f"{host}:{p}" for n, p in DEFAULT_PORTS.items() if n != "aggregator"}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in out:
            raise InvalidArgumentError(
                f"bad upstream {part!r}; use name=port or name=host:port "
                "with name in user, item, recall, rank"
            )
        out[key] = value if ":" in value else f"{host}:{value}"
    return out


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m recstack.serving.grpc")
    ap.add_argument("service", choices=list(SERVICE_NAMES))
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--release", default=None)
    ap.add_argument("--channel", default="production")
    ap.add_argument("--releases-dir", type=Path, default=None)
    ap.add_argument("--store", default="embedded", choices=["embedded", "redis"])
    ap.add_argument("--redis-url", default=None)
    ap.add_argument("--pipeline", type=Path, default=None)
    ap.add_argument(
        "--event-log",
        default=None,
        help="event log URL (sqlite:///path, redis://..., postgresql://...): AddItem records items "
        "there and every service reads them (and the events) from it",
    )
    ap.add_argument("--upstreams", default="", help="aggregator: user=8910,item=8920,recall=8950,rank=8960")
    ap.add_argument("--hop-timeout-ms", type=float, default=200.0)
    ap.add_argument("--grace", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=8)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one service until SIGTERM / SIGINT; 0 on a clean stop, 2 when it cannot start."""
    a = _args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    port = DEFAULT_PORTS[a.service] if a.port is None else a.port
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        state = None
        if a.service != "aggregator":
            opts: dict[str, Any] = {"channel": a.channel, "store": a.store}
            for key in ("release", "releases_dir", "redis_url", "pipeline", "event_log"):
                if getattr(a, key) is not None:
                    opts[key] = getattr(a, key)
            # the key of AddItem comes from the environment (never on a command line)
            opts["api_key"] = os.environ.get("RECSTACK_SERVE_API_KEY") or None
            state = load_state(ServingSettings.model_validate(opts), stop)
        servicer = make_servicer(
            a.service, state, parse_upstreams(a.upstreams, a.host), a.hop_timeout_ms / 1000.0
        )
        running = start_server(a.service, servicer, port, a.host, a.workers)
    except RecstackError as exc:
        log.error("%s service cannot start: %s", a.service, exc.message)
        return 2
    rid = state.release_id if state is not None else "-"
    log.info("%s service serving on %s:%d (release %s)", a.service, a.host, running.port, rid)
    while not stop.wait(0.1):  # short waits: the signal handler runs between them
        pass
    log.info("%s service stopping (grace %.1fs)", a.service, a.grace)
    running.stop(a.grace)
    log.info("%s service stopped", a.service)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
