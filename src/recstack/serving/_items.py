"""Items added online: the validation and the event-log record shared by ``POST /v1/items`` and the
gRPC item service's ``AddItem`` (one set of rules, one record format)."""

from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError

from recstack.errors import InvalidArgumentError
from recstack.events import NewEvent

__all__ = ["item_record", "new_item_row"]

#: the fields of an item row (`Pipeline.add_items`) besides its id
ITEM_FIELDS = ("title", "year", "genres", "text")


def new_item_row(data: dict[str, Any], integer_ids: bool) -> dict[str, Any]:
    """``data`` (``item_id``, ``title``, ``year``, ``genres``, ``text``) checked as ``POST /v1/items``
    checks its body (`recstack.serving.api.schemas.NewItem`, then `check_new_item_id`) -> the row
    `Pipeline.add_items` takes. `InvalidArgumentError` says what is wrong."""
    from recstack.serving.api.schemas import NewItem, check_new_item_id

    try:
        item = NewItem.model_validate(data)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(x) for x in e['loc']) or 'item'}: {e['msg']}" for e in exc.errors()]
        raise InvalidArgumentError("invalid item: " + "; ".join(parts)) from None
    return {
        "item_id": check_new_item_id(item.item_id, integer_ids),
        "title": item.title,
        "year": item.year,
        "genres": item.genres,
        "text": item.text,
    }


def item_record(row: dict[str, Any], release_id: str, request_id: str | None) -> NewEvent:
    """The event log's ``item`` record of a new item (a restart, the other workers and the next
    build from the log get it)."""
    now = time.time()
    return NewEvent(
        type="item",
        user_id="admin",
        item_id=str(row["item_id"]),
        ts=int(now),
        received=round(now, 3),
        release_id=release_id,
        request_id=request_id or None,
        payload={k: row[k] for k in ITEM_FIELDS},
    )
