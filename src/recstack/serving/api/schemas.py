"""Request and response bodies of the REST API (they also document OpenAPI at ``/docs``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ErrorBody",
    "ErrorResponse",
    "EventIn",
    "EventOut",
    "ItemOut",
    "Profile",
    "RecFilters",
    "RecommendationQuery",
    "RecommendationRequest",
    "RecommendationResponse",
    "ReloadRequest",
    "ScoredItem",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Profile(_Strict):
    """A new user's demographics (any subset)."""

    age: int | None = Field(default=None, ge=1, le=120)
    gender: str | None = Field(default=None, max_length=16)
    occupation: str | None = Field(default=None, max_length=64)
    zip_code: str | None = Field(default=None, max_length=16)


class RecFilters(_Strict):
    exclude: list[str | int] = Field(default_factory=list, description="item ids never to return")
    genres: list[str] = Field(default_factory=list, description="only items with one of these genres")
    exclude_genres: list[str] = Field(default_factory=list, description="no item with any of these genres")
    year_min: int | None = None
    year_max: int | None = None
    exclude_seen: bool | None = Field(
        default=None, description="default: the pipeline's filters.exclude_seen"
    )


class RecommendationQuery(BaseModel):
    """The query of ``GET /v1/users/{id}/recommendations`` (list parameters repeat or hold
    comma-separated values: ``?genres=Comedy,Drama&genres=War``)."""

    k: int | None = Field(default=None, description="number of items (1..k_max, see /v1/release)")
    model: str | None = Field(default=None, description="ranker variant; 'recall' = no ranker")
    exclude: list[str] | None = Field(default=None, description="item ids to leave out (comma-separated)")
    genres: list[str] | None = Field(default=None, description="only these genres (comma-separated)")
    exclude_genres: list[str] | None = Field(default=None, description="never these genres")
    year_min: int | None = None
    year_max: int | None = None
    explain: bool = False
    source: Literal["online", "batch"] = Field(
        default="online", description="online pipeline or batch tables"
    )


class RecommendationRequest(_Strict):
    """Exactly one way to say who the user is is enough: ``user_id``, ``profile`` or ``liked_items``
    (``profile`` may accompany an unknown ``user_id``)."""

    user_id: str | int | None = None
    profile: Profile | None = None
    liked_items: list[str | int] | None = Field(default=None, max_length=1000)
    k: int | None = Field(default=None, ge=1, description="number of items; at most the pipeline's k_max")
    model: str | None = Field(default=None, description="ranker variant (GET /v1/release lists them)")
    filters: RecFilters = Field(default_factory=RecFilters)
    explain: bool = False


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
    k: int
    items: list[ScoredItem]
    experiment: ExperimentTag | None = None


class ItemOut(BaseModel):
    item_id: str | int
    title: str | None = None
    year: int | None = None
    genres: list[str] = Field(default_factory=list)
    popularity: int = Field(description="distinct users who interacted with the item")


class EventIn(_Strict):
    """``rating`` events need ``rating``; ``timestamp`` is Unix seconds (default: now)."""

    user_id: str | int
    item_id: str | int
    type: Literal["view", "click", "rating"]
    rating: float | None = Field(default=None, ge=0.0, le=10.0)
    timestamp: int | None = Field(default=None, ge=0)


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
    release: str | None = Field(default=None, description="release id or unique prefix")
    channel: str | None = Field(default=None, description="production, staging or latest")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
    request_id: str | None = None
