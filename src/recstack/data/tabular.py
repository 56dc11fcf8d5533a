"""Generic interactions loader for CSV / TSV / Parquet files with a column mapping.

`load_tabular(path, user=..., item=..., rating=..., timestamp=...)` reads an interactions table whose
columns are named by the mapping; ``rating`` and ``timestamp`` are optional (implicit feedback gets
rating 1.0; a missing timestamp gives 0). Timestamps may be integer Unix seconds, ISO-8601 strings
(``2021-03-01``, ``2021-03-01T10:00:00``, with or without an offset) or Parquet datetimes; they become
int64 Unix seconds (UTC). Ids that are all integers become integer ids, otherwise strings.

Optional ``users`` / ``items`` attribute tables (CSV or Parquet) are keyed by the same ids (their key
column named by ``user_key`` / ``item_key``, default: the same names as in the interactions). Every
other column is kept as an attribute, integer / float columns typed as such; the items' ``genres``
column (if any) is split on ``genre_sep`` into list[str].

Duplicate (user, item) pairs follow ``duplicates`` (see `recstack.data._parse`): ``"last"`` (default)
keeps the latest row of each pair, ``"keep"`` keeps every row (event logs), ``"error"`` raises.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recstack.data._parse import DuplicatePolicy, Field, FileRef, build_dataset, dedupe, read_delimited
from recstack.data.dataset import Dataset
from recstack.errors import DataFormatError

__all__ = ["load_tabular", "read_attribute_table"]

_PARQUET = (".parquet", ".pq")


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in _PARQUET


def _default_sep(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".tab") else ","


def _header(path: Path, sep: str, encoding: str) -> list[str]:
    import csv

    with path.open("rb") as fh:
        first = fh.readline().rstrip(b"\r\n").decode(encoding, errors="replace").lstrip("\ufeff")
    return [c.strip() for c in next(csv.reader([first], delimiter=sep))] if first else []


def _read_parquet(path: Path, needed: list[str]) -> pl.DataFrame:
    try:
        df = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DataFormatError(path, None, "a Parquet file", str(exc).splitlines()[0]) from None
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataFormatError(
            path,
            None,
            f"the columns {', '.join(needed)}",
            f"columns {df.columns} (missing: {', '.join(missing)})",
        )
    return df


def _ids(s: pl.Series) -> pl.Series:
    """Integer ids when every value is an integer, else strings."""
    if s.dtype.is_integer():
        return s.cast(pl.Int64)
    as_str = s.cast(pl.String).str.strip_chars()
    as_int = as_str.cast(pl.Int64, strict=False)
    if as_int.null_count() == as_str.null_count():
        return as_int
    return as_str


def _infer(df: pl.DataFrame, skip: set[str]) -> pl.DataFrame:
    """Cast String columns whose non-empty values all parse as Int64 (else Float64)."""
    out = []
    for name in df.columns:
        s = df[name]
        if name in skip or s.dtype != pl.String:
            out.append(s)
            continue
        s = s.replace("", None)
        nn = s.null_count()
        for dtype in (pl.Int64, pl.Float64):
            cast = s.cast(dtype, strict=False)
            if cast.null_count() == nn and nn < len(s):
                s = cast
                break
        out.append(s)
    return pl.DataFrame(out)


def _parse_timestamp(s: pl.Series, path: Path, line_offset: int) -> pl.Series:
    """Int64 Unix seconds from integers, numeric strings, ISO strings or datetimes."""
    if s.dtype.is_integer():
        return s.cast(pl.Int64)
    if s.dtype.is_float():
        return s.cast(pl.Int64)
    if isinstance(s.dtype, pl.Datetime):
        return s.dt.epoch("s")
    if s.dtype == pl.Date:
        return s.cast(pl.Datetime("ms")).dt.epoch("s")
    st = s.cast(pl.String).str.strip_chars()
    as_int = st.cast(pl.Int64, strict=False)
    if as_int.null_count() == st.null_count():
        return as_int
    parsed = pl.Series("t", [None] * len(st), dtype=pl.Int64)
    for fmt in ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", None):
        try:
            dt = st.str.to_datetime(format=fmt, strict=False, time_zone="UTC")
        except pl.exceptions.PolarsError:
            continue
        parsed = parsed.fill_null(dt.dt.epoch("s"))
        if parsed.null_count() == st.null_count():
            break
    bad = (parsed.is_null() & st.is_not_null()).arg_true()
    if len(bad):
        row = int(bad[0])
        raise DataFormatError(
            path,
            row + line_offset,
            f"a timestamp in column {s.name!r} (integer Unix seconds or an ISO-8601 date/time)",
            repr(st[row]),
        )
    return parsed.rename(s.name)


def read_attribute_table(
    path: str | Path, key: str, *, sep: str | None = None, encoding: str = "utf-8"
) -> pl.DataFrame:
    """An attribute table keyed by ``key`` (CSV/TSV/Parquet); numeric columns typed, others str."""
    p = Path(path)
    if _is_parquet(p):
        return _read_parquet(p, [key])
    sep = sep or _default_sep(p)
    cols = _header(p, sep, encoding)
    if key not in cols:
        raise DataFormatError(p, 1, f"a header with the key column {key!r}", f"columns {cols}")
    df = read_delimited(
        FileRef(p),
        [Field(c, pl.String, nullable=c != key) for c in cols],
        sep=sep,
        has_header=True,
        encoding=encoding,
        quote=True,
    )
    return _infer(df, skip={key})


def load_tabular(
    path: str | Path,
    *,
    user: str = "user_id",
    item: str = "item_id",
    rating: str | None = None,
    timestamp: str | None = None,
    users: str | Path | None = None,
    items: str | Path | None = None,
    user_key: str | None = None,
    item_key: str | None = None,
    genres: str | None = "genres",
    genre_sep: str = "|",
    sep: str | None = None,
    encoding: str = "utf-8",
    duplicates: DuplicatePolicy = "last",
    name: str | None = None,
) -> Dataset:
    """Load interactions (CSV/TSV/Parquet) with a column mapping, plus optional attribute tables.

    ``user`` / ``item`` / ``rating`` / ``timestamp`` name the columns of ``path``; ``sep`` defaults to
    tab for .tsv and comma otherwise. See the module docstring for types and policies.
    """
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(p, None, "an existing CSV/TSV/Parquet file", "nothing there")
    needed = [user, item] + [c for c in (rating, timestamp) if c]
    line_offset = 2
    if _is_parquet(p):
        raw = _read_parquet(p, needed).select(needed)
    else:
        sep = sep or _default_sep(p)
        fields = [Field(user), Field(item)]
        if rating:
            fields.append(Field(rating, pl.Float64))
        if timestamp:
            fields.append(Field(timestamp, pl.String))
        raw = read_delimited(FileRef(p), fields, sep=sep, has_header=True, encoding=encoding, quote=True)
    cols: dict[str, pl.Series] = {
        "user_id": _ids(raw[user]).rename("user_id"),
        "item_id": _ids(raw[item]).rename("item_id"),
    }
    if rating:
        r = raw[rating]
        if not r.dtype.is_numeric():
            r = r.cast(pl.Float64, strict=False)
        bad = r.is_null().arg_true()
        if len(bad):
            raise DataFormatError(p, int(bad[0]) + line_offset, f"a number in column {rating!r}", "no number")
        cols["rating"] = r.cast(pl.Float64).rename("rating")
    if timestamp:
        cols["timestamp"] = _parse_timestamp(raw[timestamp], p, line_offset).rename("timestamp")
    inter = pl.DataFrame(list(cols.values()))
    inter = dedupe(inter, duplicates, source=p, line_offset=line_offset)

    users_t = items_t = None
    if users is not None:
        k = user_key or user
        users_t = read_attribute_table(users, k, encoding=encoding)
        users_t = users_t.with_columns(_ids(users_t[k]).rename(k)).rename({k: "user_id"})
        users_t = _align_key(users_t, "user_id", inter["user_id"].dtype, Path(users))
    if items is not None:
        k = item_key or item
        items_t = read_attribute_table(items, k, encoding=encoding)
        items_t = items_t.with_columns(_ids(items_t[k]).rename(k)).rename({k: "item_id"})
        items_t = _align_key(items_t, "item_id", inter["item_id"].dtype, Path(items))
        if genres and genres in items_t.columns and items_t[genres].dtype == pl.String:
            items_t = items_t.with_columns(
                pl.col(genres)
                .fill_null("")
                .str.split(genre_sep)
                .list.eval(pl.element().str.strip_chars().filter(pl.element().str.strip_chars() != ""))
            )
    for key, frame in (("user_id", users_t), ("item_id", items_t)):
        if frame is not None and frame[key].is_duplicated().any():
            dup = frame.filter(frame[key].is_duplicated())[key][0]
            raise DataFormatError(
                users if key == "user_id" else items, None, f"one row per {key}", f"{dup!r} twice"
            )
    return build_dataset(
        name or p.stem, inter, users_t, items_t, meta={"format": "tabular", "source": str(p)}
    )


def _align_key(frame: pl.DataFrame, key: str, dtype: pl.DataType, path: Path) -> pl.DataFrame:
    """Cast an attribute table's key to the interactions' id dtype (int ids vs str ids)."""
    if frame[key].dtype == dtype:
        return frame
    if dtype == pl.String:
        return frame.with_columns(pl.col(key).cast(pl.String))
    cast = frame[key].cast(dtype, strict=False)
    if cast.null_count() > frame[key].null_count():
        raise DataFormatError(path, None, f"integer ids in column {key!r} like the interactions'", "text ids")
    return frame.with_columns(cast)
