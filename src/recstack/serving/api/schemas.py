"""Request and response bodies of the REST API (they also document OpenAPI at ``/docs``).

Everything a client sends is validated here, at the edge, before any store or model sees it: ids
are JSON integers within int64 or strings of 1..64 printable characters (``true`` / ``false`` are
not ids), timestamps are Unix *seconds* between 1990 and the end of tomorrow (UTC) (a millisecond timestamp is
refused with a message that says so), ratings are finite, lists and strings have caps. A rejected
request is a 422 that names the field and changes nothing.

Some limits depend on the release being served (the genre names, the ranker variants, ``k_max``,
the timestamp's upper end): their fields carry an ``x-recstack`` marker that
`recstack.serving.api.openapi` replaces with the served values in ``/openapi.json``, so the schema
says exactly what the server accepts.
"""

from __future__ import annotations

import math
import re
import time
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    field_validator,
)

from recstack.errors import InvalidArgumentError

__all__ = [
    "DAY",
    "ID_MAX_LENGTH",
    "MAX_GENRES",
    "MAX_LIST",
    "MIN_TIMESTAMP",
    "ActionEvent",
    "ErrorBody",
    "ErrorResponse",
    "EventIn",
    "EventOut",
    "ExternalId",
    "Genre",
    "ItemOut",
    "KParam",
    "ModelParam",
    "NewItem",
    "Profile",
    "RatingEvent",
    "RecFilters",
    "RecommendationQuery",
    "RecommendationRequest",
    "RecommendationResponse",
    "ReloadRequest",
    "ScoredItem",
    "check_timestamp",
    "latest_timestamp",
]

#: longest string id (user ids of unknown users become store keys: they must stay small)
ID_MAX_LENGTH = 64
#: longest list a request may hold (exclude, liked_items)
MAX_LIST = 1000
#: most genre names a filter may hold
MAX_GENRES = 64
#: 1990-01-01T00:00:00Z: the earliest event timestamp accepted (Unix seconds)
MIN_TIMESTAMP = 631_152_000
#: seconds per day: the newest event timestamp accepted is the end of tomorrow (UTC), see `latest_timestamp`
DAY = 86_400
#: largest integer id: JSON-safe (every JSON parser, JavaScript's included, holds it exactly)
MAX_INT_ID = 2**53 - 1

_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


def _json_int(v: Any) -> Any:
    """A JSON integer: an int or an integral float (``7.0``); never a bool or a string."""
    if isinstance(v, (bool, str)):
        raise ValueError("must be a JSON integer (not a string or a boolean)")
    if isinstance(v, float) and v.is_integer() and abs(v) <= 2**63:
        return int(v)
    return v


_JSON_INT = BeforeValidator(_json_int)
#: an integer of a JSON body (as JSON Schema's ``integer``: 7 and 7.0, not "7" or true); constraints
#: go before the validator (``Annotated[int, Field(ge=1), _JSON_INT]``) to reach the JSON schema
JInt = Annotated[int, _JSON_INT]
JBool = Annotated[bool, Strict()]
JFloat = Annotated[float, Strict()]

#: a string holding an integer id
INT_ID_STRING = re.compile(r"-?[0-9]{1,15}")
StrId = Annotated[
    str, Strict(), StringConstraints(min_length=1, max_length=ID_MAX_LENGTH, pattern=_PRINTABLE)
]
IntId = Annotated[int, Field(ge=-MAX_INT_ID, le=MAX_INT_ID), _JSON_INT]
#: an external user or item id: a JSON integer within +-(2**53 - 1), or a string of 1..64 printable
#: characters
ExternalId = IntId | StrId


def latest_timestamp(now: float | None = None) -> int:
    """The newest event timestamp accepted (Unix seconds): the end of tomorrow, UTC, i.e. between one
    and two days ahead of ``now`` (clock skew between clients and the server). A step that changes
    once a day, so that ``/openapi.json``'s ``maximum`` and the validator say the same thing to a
    client that read the schema minutes before sending (a bound moving with every second never did)."""
    t = int(time.time() if now is None else now)
    return (t // DAY + 2) * DAY - 1


def check_timestamp(ts: int) -> int:
    """``ts`` (Unix seconds) within [1990-01-01, `latest_timestamp`]; a millisecond value is named as such."""
    upper = latest_timestamp()
    if ts > upper:
        if MIN_TIMESTAMP * 1000 <= ts <= upper * 1000:
            raise ValueError(f"timestamp {ts} looks like milliseconds; send Unix seconds (here {ts // 1000})")
        raise ValueError(
            f"timestamp {ts} is in the future; at most the end of tomorrow UTC ({upper}), in Unix seconds"
        )
    return ts


Timestamp = Annotated[
    int,
    Field(
        ge=MIN_TIMESTAMP,
        description="Unix seconds, 1990-01-01 .. end of tomorrow UTC (default: now); no milliseconds",
        json_schema_extra={"x-recstack": "timestamp"},
    ),
    _JSON_INT,
    AfterValidator(check_timestamp),
]

Genre = Annotated[
    str, StringConstraints(min_length=1, max_length=64), Field(json_schema_extra={"x-recstack": "genre"})
]
Year = Annotated[int, Field(ge=0, le=9999), _JSON_INT]
QueryYear = Annotated[int, Field(ge=0, le=9999)]
KParam = Annotated[
    int,
    Field(
        ge=1, description="number of items: 1..k_max (GET /v1/release)", json_schema_extra={"x-recstack": "k"}
    ),
]
BodyK = Annotated[
    int,
    Field(
        ge=1, description="number of items: 1..k_max (GET /v1/release)", json_schema_extra={"x-recstack": "k"}
    ),
    _JSON_INT,
]
ModelParam = Annotated[
    str,
    Field(
        max_length=64,
        description="ranker variant ('recall' = no ranker; GET /v1/release lists them)",
        json_schema_extra={"x-recstack": "model"},
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Profile(_Strict):
    """A new user's demographics (any subset)."""

    age: Annotated[int, Field(ge=1, le=120), _JSON_INT] | None = None
    gender: str | None = Field(default=None, max_length=16)
    occupation: str | None = Field(default=None, max_length=64)
    zip_code: str | None = Field(default=None, max_length=16)


class RecFilters(_Strict):
    exclude: list[ExternalId] = Field(
        default_factory=list, max_length=MAX_LIST, description="item ids never to return"
    )
    genres: list[Genre] = Field(
        default_factory=list, max_length=MAX_GENRES, description="only items with one of these genres"
    )
    exclude_genres: list[Genre] = Field(
        default_factory=list, max_length=MAX_GENRES, description="no item with any of these genres"
    )
    year_min: Year | None = None
    year_max: Year | None = None
    exclude_seen: JBool | None = Field(
        default=None, description="default: the pipeline's filters.exclude_seen"
    )


class RecommendationQuery(BaseModel):
    """The query of ``GET /v1/users/{id}/recommendations`` (list parameters repeat:
    ``?genres=Comedy&genres=War``; a comma-separated value is split too)."""

    k: KParam | None = None
    model: ModelParam | None = None
    exclude: list[Annotated[str, StringConstraints(min_length=1)]] | None = Field(
        default=None, max_length=MAX_LIST, description="item ids to leave out (also comma-separated)"
    )
    genres: list[Genre] | None = Field(default=None, max_length=MAX_GENRES, description="only these genres")
    exclude_genres: list[Genre] | None = Field(
        default=None, max_length=MAX_GENRES, description="never these genres"
    )
    year_min: QueryYear | None = None
    year_max: QueryYear | None = None
    explain: bool = False
    source: Literal["online", "batch"] = Field(
        default="online", description="online pipeline or batch tables"
    )


class RecommendationRequest(_Strict):
    """Who the user is: ``user_id``, ``profile`` (a new user's demographics, may accompany an unknown
    ``user_id``) and / or ``liked_items``; with none of them, an anonymous visitor (popular items)."""

    user_id: ExternalId | None = None
    profile: Profile | None = None
    liked_items: list[ExternalId] | None = Field(default=None, max_length=MAX_LIST)
    k: BodyK | None = None
    model: ModelParam | None = None
    filters: RecFilters = Field(default_factory=RecFilters)
    explain: JBool = False


class ScoredItem(BaseModel):
    item_id: str | int
    score: float
    title: str | None = None
    year: int | None = None
    genres: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list)
    explain: dict[str, Any] | None = None


class ExperimentTag(BaseModel):
    """The experiment and arm that served an answer (None outside an experiment)."""

    name: str
    arm: str


class RecommendationResponse(BaseModel):
    request_id: str
    release_id: str
    model: str
    user_id: str | int | None = None
    user_kind: str
    cold_start: bool
    fallbacks: list[str]
    degraded: list[str] = Field(
        default_factory=list,
        description="what this answer lacks and why (e.g. the user's recent events while the shared "
        "store is unavailable); empty when complete",
    )
    k: int
    items: list[ScoredItem]
    experiment: ExperimentTag | None = None


class ItemOut(BaseModel):
    item_id: str | int
    title: str | None = None
    year: int | None = None
    genres: list[str] = Field(default_factory=list)
    popularity: int = Field(description="distinct users who interacted with the item")


class NewItem(_Strict):
    """``POST /v1/items``: a catalogue item added online (embedded from its title, year, genres
    and text)."""

    #: a catalogue with integer item ids takes integer ids only (``/openapi.json`` says which:
    #: `recstack.serving.api.openapi.fill_limits`)
    item_id: ExternalId = Field(json_schema_extra={"x-recstack": "new_item_id"})
    title: str = Field(min_length=1, max_length=300)
    year: int | None = Field(default=None, ge=1800, le=2200)
    genres: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=MAX_GENRES
    )
    text: str | None = Field(default=None, max_length=5000, description="a description, tags, a synopsis")


def check_new_item_id(item_id: int | str, integer_ids: bool) -> int | str:
    """``item_id`` as the catalogue's vocabulary keeps it: with integer ids (MovieLens) a JSON
    integer or a string of digits, refused otherwise (before anything is logged)."""
    if not integer_ids:
        return str(item_id)
    if isinstance(item_id, int):
        return item_id
    if INT_ID_STRING.fullmatch(item_id) is None or abs(int(item_id)) > MAX_INT_ID:
        raise InvalidArgumentError(
            f"item_id {item_id[:64]!r}: this catalogue's item ids are integers (|id| <= {MAX_INT_ID})"
        )
    return int(item_id)


class _EventBase(_Strict):
    user_id: ExternalId
    item_id: ExternalId
    timestamp: Timestamp | None = None


class RatingEvent(_EventBase):
    """A rating (0..10) of an item."""

    type: Literal["rating"]
    rating: JFloat = Field(ge=0.0, le=10.0, allow_inf_nan=False)

    @field_validator("rating")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("rating must be a finite number")
        return v


class ActionEvent(_EventBase):
    """A view or a click of an item (no rating)."""

    type: Literal["view", "click"]


#: ``POST /v1/events``: a rating (needs ``rating``) or a view / click; ``timestamp`` in Unix seconds
EventIn = Annotated[RatingEvent | ActionEvent, Field(discriminator="type")]


class EventOut(BaseModel):
    request_id: str
    release_id: str
    accepted: bool
    offset: int | None = Field(description="the event's offset in the event log (None: no log)")
    user_id: str | int
    item_id: str | int
    item_known: bool = Field(description="false: kept in the log for the next release only")
    history_length: int


class ReloadRequest(_Strict):
    release: str | None = Field(default=None, max_length=128, description="release id or unique prefix")
    channel: str | None = Field(default=None, max_length=64, description="production, staging or latest")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
    request_id: str | None = None
