"""Training data from the event log: `EventsSpec` (the ``[dataset.events]`` table of a build) and
`dataset_with_events` (a base `Dataset`, or none, plus the log's interactions).

Policy, in the order it is applied:

1. **Which events**: those with ``after < offset <= upto`` (``upto`` defaults to the log's last
   offset when the build starts; it goes into the release's lineage, `EventsLineage`). Inclusion is
   decided by offset, never by event time, so every event is in exactly one release's increment.
   Compacted events are read from ``archive`` (the Parquet files of ``recstack events compact``).
2. **Which types**: ``types`` (default view, click, rating; impressions are exposures, not
   interactions). A rating keeps its value; a view or click gets ``implicit_rating`` (default 4.0,
   "liked" on MovieLens' 1-5 scale: the protocols treat every interaction as a positive).
   ``before_ts`` keeps only events that happened before that time (``recstack retrain`` holds the
   most recent days out this way).
3. **Duplicates**: an event delivered twice (same user, item, type, event time and rating: a client
   retry) counts once. A user who interacts with an item again, in the log or after the base data
   set, follows ``duplicates``: ``last`` (default) keeps the latest by event time (a new rating
   replaces the old one), ``keep`` keeps every one.
4. **Late events**: an event whose time is older than data already in a release (a client that was
   offline) is still new by offset: it enters the next build with its own timestamp and is never
   dropped nor counted twice.
5. **New ids**: users and items unknown to the base data set become users and items of the new
   data set (no attributes: null profile, no title or genres). ``item`` records (items added online
   by ``POST /v1/items``) add their item with its title, year, genres and text, interactions or not
   (the latest record of an id wins; items of the base data set keep their attributes). When an id
   is not an integer while the base data set's ids are, the vocabulary becomes one of strings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, Field

from recstack.config import ComponentConfig
from recstack.data.dataset import Dataset
from recstack.errors import InvalidArgumentError
from recstack.events.base import EVENT_SCHEMA, EventLog, events_frame

__all__ = ["EventsLineage", "EventsSpec", "dataset_with_events", "read_events"]


class EventsSpec(ComponentConfig):
    """The event log as a data source of ``recstack build`` (see the module docstring)."""

    #: the log's URL (`recstack.events.open_log`)
    log: str
    #: events with offset > after ...
    after: int = Field(default=0, ge=0)
    #: ... and <= upto (None: the log's last offset when the build starts)
    upto: int | None = Field(default=None, ge=0)
    #: a directory of Parquet exports of compacted events (``recstack events compact --archive``)
    archive: str | None = None
    types: tuple[Literal["view", "click", "rating"], ...] = ("view", "click", "rating")
    implicit_rating: float = 4.0
    duplicates: Literal["last", "keep"] = "last"
    #: only events that happened before this Unix time (a holdout's start)
    before_ts: int | None = None


class EventsLineage(BaseModel):
    """What a release took from the event log (``manifest.events``)."""

    log_id: str
    log: str
    after: int
    last_offset: int
    read: int = Field(description="events with after < offset <= last_offset")
    used: int = Field(description="interactions they added after the type filter and duplicates")
    duplicates_dropped: int
    replaced: int = Field(default=0, description="(user, item) pairs seen again: the latest kept")
    new_users: int
    new_items: int
    ts_min: int | None = None
    ts_max: int | None = None
    before_ts: int | None = None


def read_events(spec: EventsSpec, event_log: EventLog) -> tuple[pl.DataFrame, int]:
    """(events with ``spec.after < offset <= upto`` from the archive and the log, upto)."""
    upto = spec.upto if spec.upto is not None else event_log.last_offset()
    parts: list[pl.DataFrame] = []
    if spec.archive:
        files = sorted(Path(spec.archive).glob("*.parquet"))
        for f in files:
            df = pl.read_parquet(f).cast(EVENT_SCHEMA)  # type: ignore[arg-type]
            parts.append(df.filter((pl.col("offset") > spec.after) & (pl.col("offset") <= upto)))
    parts.append(event_log.to_frame(spec.after, upto))
    df = pl.concat(parts) if parts else events_frame([])
    return df.unique(subset=["offset"], keep="first").sort("offset"), upto


def _interactions_of(events: pl.DataFrame, spec: EventsSpec) -> tuple[pl.DataFrame, int]:
    ev = events.filter(pl.col("type").is_in(list(spec.types)) & pl.col("item_id").is_not_null())
    if spec.before_ts is not None:
        ev = ev.filter(pl.col("ts") < spec.before_ts)
    ev = ev.with_columns(
        pl.when(pl.col("type") == "rating")
        .then(pl.col("rating"))
        .otherwise(pl.lit(spec.implicit_rating))
        .alias("value")
    )
    n = ev.height
    ev = ev.unique(subset=["user_id", "item_id", "type", "ts", "value"], keep="first", maintain_order=True)
    out = ev.select(
        pl.col("user_id"),
        pl.col("item_id"),
        pl.col("value").cast(pl.Float32).alias("rating"),
        pl.col("ts").alias("timestamp"),
    )
    return out, n - ev.height


def _items_of(events: pl.DataFrame) -> pl.DataFrame:
    """The ``item`` records as an items table (item_id str, title, year, genres, text); the latest
    record of an id wins."""
    rows: dict[str, dict[str, Any]] = {}
    for item_id, payload in (
        events.filter((pl.col("type") == "item") & pl.col("item_id").is_not_null())
        .select("item_id", "payload")
        .iter_rows()
    ):
        p = json.loads(payload) if payload else {}
        year = p.get("year")
        rows[str(item_id)] = {
            "item_id": str(item_id),
            "title": str(p.get("title") or ""),
            "year": int(year) if year is not None else None,
            "genres": [str(g) for g in p.get("genres") or []],
            "text": p.get("text"),
        }
    schema: dict[str, Any] = {
        "item_id": pl.String,
        "title": pl.String,
        "year": pl.Int32,
        "genres": pl.List(pl.String),
        "text": pl.String,
    }
    return pl.DataFrame(list(rows.values()), schema=schema)


def _all_int(s: pl.Series) -> bool:
    return s.len() == 0 or bool(s.str.contains(r"^-?\d{1,18}$").all())


def dataset_with_events(
    base: Dataset | None, events: pl.DataFrame, spec: EventsSpec, *, name: str | None = None
) -> tuple[Dataset, dict[str, Any]]:
    """The base data set plus the events' interactions (the module docstring's policy) and the
    statistics for `EventsLineage` (``used``, ``duplicates_dropped``, ``new_users``, ``new_items``,
    ``ts_min``, ``ts_max``)."""
    inter, dup = _interactions_of(events, spec)
    added = _items_of(events)
    if base is None and inter.height == 0:
        raise InvalidArgumentError(
            "no base data set and no interaction in the event log: nothing to train on"
        )
    int_ids = {
        "user": _all_int(inter["user_id"]) and (base is None or base.user_vocab.is_integer),
        "item": _all_int(inter["item_id"])
        and _all_int(added["item_id"])
        and (base is None or base.item_vocab.is_integer),
    }
    for what in ("user", "item"):
        col = f"{what}_id"
        inter = inter.with_columns(pl.col(col).cast(pl.Int64 if int_ids[what] else pl.String))
    frames = [inter]
    users = items = None
    new_users = inter.select("user_id").unique().height
    new_items = inter.select("item_id").unique().height
    if base is not None:
        uid = pl.Int64 if int_ids["user"] else pl.String
        iid = pl.Int64 if int_ids["item"] else pl.String
        umap = pl.DataFrame({"user": range(base.n_users), "user_id": base.user_vocab.ids}).with_columns(
            pl.col("user").cast(pl.Int32), pl.col("user_id").cast(uid)
        )
        imap = pl.DataFrame({"item": range(base.n_items), "item_id": base.item_vocab.ids}).with_columns(
            pl.col("item").cast(pl.Int32), pl.col("item_id").cast(iid)
        )
        old = (
            base.interactions.join(umap, on="user", how="left")
            .join(imap, on="item", how="left")
            .select("user_id", "item_id", "rating", "timestamp")
        )
        frames.insert(0, old)
        users = (
            base.users.drop("user")
            .rename({"external_id": "user_id"})
            .with_columns(pl.col("user_id").cast(uid))
        )
        items = (
            base.items.drop("item")
            .rename({"external_id": "item_id"})
            .with_columns(pl.col("item_id").cast(iid))
        )
        new_users = inter.select("user_id").unique().join(umap, on="user_id", how="anti").height
        new_items = inter.select("item_id").unique().join(imap, on="item_id", how="anti").height
    if added.height:
        added = added.with_columns(pl.col("item_id").cast(pl.Int64 if int_ids["item"] else pl.String))
        if items is None:
            items = added
        else:
            fresh = added.join(items.select("item_id"), on="item_id", how="anti")
            items = pl.concat([items, fresh], how="diagonal_relaxed")
            new_items += fresh.join(inter.select("item_id").unique(), on="item_id", how="anti").height
    both = pl.concat(frames, how="vertical_relaxed")
    if spec.duplicates == "last":
        before = both.height
        both = (
            both.with_row_index("_row")
            .sort(["timestamp", "_row"])
            .unique(subset=["user_id", "item_id"], keep="last")
            .sort("_row")
            .drop("_row")
        )
        replaced = before - both.height
    else:
        replaced = 0
    ds = Dataset.from_frames(
        name or (f"{base.name}+events" if base is not None else "events"),
        both,
        users,
        items,
        meta={**(base.meta if base is not None else {}), "events": True},
    )
    stats = {
        "used": inter.height,
        "duplicates_dropped": dup,
        "replaced": replaced,
        "new_users": new_users,
        "new_items": new_items,
        "ts_min": int(inter["timestamp"].min()) if inter.height else None,  # type: ignore[arg-type]
        "ts_max": int(inter["timestamp"].max()) if inter.height else None,  # type: ignore[arg-type]
    }
    return ds, stats
