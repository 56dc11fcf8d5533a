"""A circuit breaker for calls to a shared service (Redis): after ``fail_max`` failures in a row
the circuit *opens* and calls fail at once, without waiting for a timeout, for ``reset_timeout``
seconds; then one trial call goes through (*half-open*): its success closes the circuit, its
failure opens it again. Other calls keep failing fast while the trial runs.

Written here rather than taken from pybreaker because pybreaker holds one lock around every call it
guards: the request threads of a server would wait for each other's Redis round trips. Here the
lock covers only the state changes, never the call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal, TypeVar

__all__ = ["BreakerOpenError", "CircuitBreaker"]

T = TypeVar("T")
State = Literal["closed", "open", "half-open"]


class BreakerOpenError(Exception):
    """The circuit is open: the call was not made."""

    def __init__(self, retry_in: float, last_error: str | None) -> None:
        self.retry_in = retry_in
        self.last_error = last_error
        super().__init__(f"circuit open (retrying in {retry_in:.1f} s); last error: {last_error}")


class CircuitBreaker:
    """Guards calls with ``call(fn, *args)``; ``failures`` are the exception classes that count
    (others pass through and count as a success of the service)."""

    def __init__(
        self,
        fail_max: int = 3,
        reset_timeout: float = 1.0,
        failures: tuple[type[BaseException], ...] = (Exception,),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fail_max = fail_max
        self.reset_timeout = reset_timeout
        self.failures = failures
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._count = 0
        self._opened_at = 0.0
        self._trial_running = False
        self.last_error: str | None = None
        #: called with the new state on every change (outside the lock)
        self.on_change: Callable[[State], None] | None = None

    @property
    def state(self) -> State:
        with self._lock:
            if self._state == "open" and self._clock() - self._opened_at >= self.reset_timeout:
                return "half-open"
            return self._state

    def _admit(self) -> bool:
        """Whether this call may go through; True for the half-open trial (marked as running)."""
        with self._lock:
            if self._state == "closed":
                return False
            if self._state == "open" and self._clock() - self._opened_at < self.reset_timeout:
                raise BreakerOpenError(
                    self.reset_timeout - (self._clock() - self._opened_at), self.last_error
                )
            if self._trial_running:
                raise BreakerOpenError(self.reset_timeout, self.last_error)
            self._state = "half-open"
            self._trial_running = True
            return True

    def call(self, fn: Callable[..., T], *args: object) -> T:
        trial = self._admit()
        try:
            out = fn(*args)
        except self.failures as exc:
            self._failed(exc, trial)
            raise
        except BaseException:
            if trial:
                with self._lock:
                    self._trial_running = False
            raise
        self._succeeded(trial)
        return out

    def _failed(self, exc: BaseException, trial: bool) -> None:
        changed: State | None = None
        with self._lock:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._count += 1
            if trial:
                self._trial_running = False
            if trial or (self._state == "closed" and self._count >= self.fail_max):
                changed = None if self._state == "open" else "open"
                self._state = "open"
                self._opened_at = self._clock()
        if changed and self.on_change is not None:
            self.on_change(changed)

    def _succeeded(self, trial: bool) -> None:
        changed: State | None = None
        with self._lock:
            self._count = 0
            if trial:
                self._trial_running = False
            if self._state != "closed":
                self._state = "closed"
                changed = "closed"
        if changed and self.on_change is not None:
            self.on_change(changed)
