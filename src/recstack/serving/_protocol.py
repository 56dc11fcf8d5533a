"""Connection guards of the HTTP server (uvicorn's httptools protocol with three more limits).

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` seconds, but a connection
that never sends a complete request has no deadline (4,000 half-open connections were all kept),
and it has no cap on open connections. `GuardedHttpTools` adds, per worker process:

- a request deadline: a connection that has not sent a whole request (head and body) within
  ``header_timeout`` seconds of connecting, or of starting its next request, is closed;
- a connection limit: past ``max_connections`` open connections a new one is closed at once;
- (uvicorn's own ``limit_concurrency``, set to the same number, answers 503 beyond it in flight).

The limits are class attributes set by `configure` in each process before uvicorn starts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["GuardedHttpTools", "configure"]

log = logging.getLogger(__name__)


class GuardedHttpTools(HttpToolsProtocol):
    header_timeout: float = 10.0
    max_connections: int = 1000

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            log.warning("connection limit (%d) reached: closing a new connection", self.max_connections)
            transport.close()
            return
        self._arm()

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def configure(header_timeout: float, max_connections: int) -> type[Any]:
    """Set the limits of this process and return the protocol class for uvicorn's ``http``."""
    GuardedHttpTools.header_timeout = header_timeout
    GuardedHttpTools.max_connections = max_connections
    return GuardedHttpTools
