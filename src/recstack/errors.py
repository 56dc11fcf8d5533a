"""One exception hierarchy for the whole project.

Each class carries the HTTP status and the gRPC status code name that the API layers map it to, so
that no layer invents its own mapping.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ArtifactError",
    "ConfigError",
    "ConflictError",
    "DataFormatError",
    "InvalidArgumentError",
    "NotFittedError",
    "NotFoundError",
    "RecstackError",
    "TooLargeError",
    "UnavailableError",
    "UnknownIdError",
]


class RecstackError(Exception):
    """Base class of every error recstack raises on purpose."""

    http_status: ClassVar[int] = 500
    grpc_code: ClassVar[str] = "INTERNAL"
    code: ClassVar[str] = "internal_error"

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class InvalidArgumentError(RecstackError, ValueError):
    """A caller passed a value that is not allowed; the message says what is."""

    http_status = 422
    grpc_code = "INVALID_ARGUMENT"
    code = "invalid_argument"


class ConfigError(InvalidArgumentError):
    """A configuration file or setting is malformed."""

    code = "invalid_config"


class DataFormatError(RecstackError, ValueError):
    """An input file does not have the expected format. The message names file, line, expectation."""

    http_status = 422
    grpc_code = "INVALID_ARGUMENT"
    code = "data_format"

    def __init__(self, path: object, line: int | None, expected: str, found: str = "") -> None:
        where = f"{path}" if line is None else f"{path}:{line}"
        msg = f"{where}: expected {expected}"
        if found:
            msg += f", found {found}"
        super().__init__(msg)
        self.path = path
        self.line = line
        self.expected = expected
        self.found = found


class NotFoundError(RecstackError, LookupError):
    """A named thing (release, dataset, channel, file) does not exist."""

    http_status = 404
    grpc_code = "NOT_FOUND"
    code = "not_found"


class UnknownIdError(NotFoundError, KeyError):
    """An external user or item id is not in the vocabulary."""

    code = "unknown_id"

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class NotFittedError(RecstackError, RuntimeError):
    """A model was used before `fit` or `load`."""

    code = "not_fitted"


class TooLargeError(InvalidArgumentError):
    """An input is above a configured size limit (for example EASE's item count)."""

    code = "too_large"


class ConflictError(RecstackError):
    """The request is well-formed but conflicts with what exists (a name taken, a second running
    experiment, two arms of one name): change the request or the state, not the syntax."""

    http_status = 409
    grpc_code = "ALREADY_EXISTS"
    code = "conflict"


class ArtifactError(RecstackError):
    """A release or model artifact is missing, malformed or fails its checksum."""

    http_status = 500
    grpc_code = "FAILED_PRECONDITION"
    code = "artifact_error"


class UnavailableError(RecstackError):
    """A backend (Redis, PostgreSQL, a downstream service) does not answer."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    code = "unavailable"
