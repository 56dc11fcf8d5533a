"""MovieLens loaders: 100K, 1M, 10M, 20M, 25M, latest and latest-small, from a directory or a .zip.

Every format gives the same `Dataset`:

- interactions: user, item (dense indices), rating (stars as float32: 1..5, or 0.5..5 in half stars
  from 10M on), timestamp (Unix seconds, int64);
- users (100K, 1M only): user, external_id, age (int; in 1M the lower bound of the age bucket:
  1 = under 18, 18, 25, 35, 45, 50, 56), gender ("M"/"F"), occupation (str; 1M codes mapped to the
  names of its README), zip (str);
- items: item, external_id, title (str, the trailing "(1995)" removed), year (int or null), genres
  (list[str]; 100K's "unknown" flag and "(no genres listed)" give an empty list), and where the files
  have them: imdb_url (100K), imdb (str, links.csv), tmdb (int, links.csv), tags (list[str], the
  distinct free-text tags users gave the movie, the most applied first), genome (list[float32] per
  movie, relevance of each genome tag ordered by tagId; the tag names are in ``meta["genome_tags"]``).

Files: 100K ``u.data`` (tab-separated), ``u.item`` / ``u.user`` (``|``, ISO-8859-1); 1M / 10M
``ratings.dat``, ``movies.dat``, ``users.dat`` (1M only), ``tags.dat`` (10M) (``::``-separated,
ISO-8859-1); 20M / 25M / latest / latest-small ``ratings.csv``, ``movies.csv``, ``tags.csv``,
``links.csv``, ``genome-scores.csv`` + ``genome-tags.csv`` (CSV with header, UTF-8).

Duplicate (user, item) ratings follow ``duplicates`` (see `recstack.data._parse`): ``"last"`` (default)
keeps the latest rating of a pair, ``"keep"`` keeps all, ``"error"`` raises.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import polars as pl

from recstack.data._parse import (
    DuplicatePolicy,
    Field,
    FileRef,
    Source,
    build_dataset,
    dedupe,
    read_delimited,
)
from recstack.data.dataset import Dataset
from recstack.data.paths import BUNDLED, bundled_path, find_dataset
from recstack.errors import DataFormatError

__all__ = [
    "ML1M_OCCUPATIONS",
    "ML100K_GENRES",
    "MOVIELENS_FORMATS",
    "MOVIELENS_GENRES",
    "detect_movielens_format",
    "load_movielens",
]

MOVIELENS_FORMATS: tuple[str, ...] = (
    "movielens-100k",
    "movielens-1m",
    "movielens-10m",
    "movielens-20m",
    "movielens-25m",
    "movielens-latest",
    "movielens-latest-small",
)
_CSV_FORMATS = MOVIELENS_FORMATS[3:]

ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip
#: The 18 MovieLens genres (1M README), without "unknown".
MOVIELENS_GENRES: tuple[str, ...] = ML100K_GENRES[1:]

ML1M_OCCUPATIONS: tuple[str, ...] = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)  # fmt: skip

_LATIN1 = "iso-8859-1"
_YEAR_RE = r"\s*\((\d{4})(?:\s*[-–]\s*\d{0,4})?\)\s*$"
_NAME_TO_FORMAT = {
    "ml-100k": "movielens-100k",
    "ml-1m": "movielens-1m",
    "ml-10m": "movielens-10m",
    "ml-10m100k": "movielens-10m",
    "ml-20m": "movielens-20m",
    "ml-25m": "movielens-25m",
    "ml-latest-small": "movielens-latest-small",
    "ml-latest": "movielens-latest",
}


def _normalise_format(fmt: str) -> str:
    f = fmt.lower().strip()
    if f in _NAME_TO_FORMAT:
        return _NAME_TO_FORMAT[f]
    if not f.startswith("movielens-") and f"movielens-{f}" in MOVIELENS_FORMATS:
        f = f"movielens-{f}"
    if f not in MOVIELENS_FORMATS:
        raise ValueError(f"unknown MovieLens format {fmt!r}; use one of {', '.join(MOVIELENS_FORMATS)}")
    return f


def detect_movielens_format(path: str | Path) -> str:
    """The MovieLens format of a directory or zip, from the files present (and, for the CSV
    generations, the archive's name: ml-20m, ml-25m, ml-latest-small; otherwise movielens-latest)."""
    src = Source(path)
    return _detect(src)


def _detect(src: Source) -> str:
    names = src.names
    if "u.data" in names:
        return "movielens-100k"
    if "ratings.dat" in names:
        return "movielens-1m" if "users.dat" in names else "movielens-10m"
    if "ratings.csv" in names:
        ref = src.get("ratings.csv")
        assert ref is not None
        hints = [src.path.stem.lower()]
        if ref.member is not None and "/" in ref.member:
            hints.append(ref.member.split("/")[0].lower())
        elif ref.path.parent != src.path:
            hints.append(ref.path.parent.name.lower())
        for hint in hints:
            if hint in _NAME_TO_FORMAT and _NAME_TO_FORMAT[hint] in _CSV_FORMATS:
                return _NAME_TO_FORMAT[hint]
        return "movielens-latest"
    raise DataFormatError(
        src.path,
        None,
        "a MovieLens layout: u.data (100K), ratings.dat (1M/10M) or ratings.csv (20M/25M/latest)",
        f"files {sorted(names)[:10]}",
    )


def _title_year(df: pl.DataFrame, col: str = "title") -> pl.DataFrame:
    return df.with_columns(
        pl.col(col).str.replace(_YEAR_RE, "").str.strip_chars().alias("title"),
        pl.col(col).str.extract(_YEAR_RE, 1).cast(pl.Int32, strict=False).alias("year"),
    )


def _split_genres(col: str = "genres") -> pl.Expr:
    return (
        pl.col(col)
        .fill_null("")
        .str.split("|")
        .list.eval(pl.element().filter((pl.element() != "") & (pl.element() != "(no genres listed)")))
    )


def _tags_per_item(tags: pl.DataFrame) -> pl.DataFrame:
    """Distinct tags per movie, the most applied first (ties: alphabetical), so that the first few
    are a movie's top tags (the item text of `recstack.text`)."""
    return (
        tags.filter(pl.col("tag").is_not_null() & (pl.col("tag") != ""))
        .group_by("item_id", "tag")
        .agg(pl.len().alias("_n"))
        .sort(["item_id", "_n", "tag"], descending=[False, True, False])
        .group_by("item_id", maintain_order=True)
        .agg(pl.col("tag").alias("tags"))
    )


def _join_tags(items: pl.DataFrame, tags: pl.DataFrame) -> pl.DataFrame:
    """Add ``tags`` (list[str], empty for movies nobody tagged)."""
    joined = items.join(_tags_per_item(tags), on="item_id", how="left")
    return joined.with_columns(pl.col("tags").fill_null(pl.lit([], dtype=pl.List(pl.String))))


def _finish(
    name: str,
    fmt: str,
    src: Source,
    ratings: pl.DataFrame,
    users: pl.DataFrame | None,
    items: pl.DataFrame,
    duplicates: DuplicatePolicy,
    ratings_ref: FileRef,
    header: bool,
    meta: dict[str, Any] | None = None,
) -> Dataset:
    ratings = dedupe(ratings, duplicates, source=ratings_ref.display, line_offset=2 if header else 1)
    full_meta: dict[str, Any] = {"format": fmt, "source": str(src.path)}
    full_meta.update(meta or {})
    return build_dataset(name, ratings, users, items, meta=full_meta)


_RATING_FIELDS = [
    Field("user_id", pl.Int64),
    Field("item_id", pl.Int64),
    Field("rating", pl.Float64),
    Field("timestamp", pl.Int64),
]


def _load_100k(src: Source, name: str, duplicates: DuplicatePolicy) -> Dataset:
    ref = src.require("u.data", "ratings: user item rating timestamp, tab-separated")
    ratings = read_delimited(ref, _RATING_FIELDS, sep="\t", has_header=False)
    genres = list(ML100K_GENRES)
    gref = src.get("u.genre")
    if gref is not None:
        g = read_delimited(
            gref, [Field("genre"), Field("idx", pl.Int64)], sep="|", has_header=False, encoding=_LATIN1
        )
        genres = g.sort("idx")["genre"].to_list()
    iref = src.require("u.item", "movies: id|title|release date|video date|IMDb URL|genre flags")
    flags = [Field(f"g{i}", pl.Int64) for i in range(len(genres))]
    items = read_delimited(
        iref,
        [
            Field("item_id", pl.Int64),
            Field("title", pl.String),
            Field("release_date", pl.String, nullable=True),
            Field("imdb_url", pl.String, nullable=True),
            *flags,
        ],
        sep="|",
        has_header=False,
        encoding=_LATIN1,
        n_fields=5 + len(genres),
        positions=[0, 1, 2, 4, *range(5, 5 + len(genres))],
    )
    flag_cols = [f.name for f in flags]
    items = _title_year(items).with_columns(
        pl.concat_list([pl.when(pl.col(c) == 1).then(pl.lit(genres[i])) for i, c in enumerate(flag_cols)])
        .list.drop_nulls()
        .list.eval(pl.element().filter(pl.element() != "unknown"))
        .alias("genres"),
        pl.coalesce(
            pl.col("year"),
            pl.col("release_date").str.extract(r"(\d{4})$", 1).cast(pl.Int32, strict=False),
        ).alias("year"),
    )
    items = items.select("item_id", "title", "year", "genres", "imdb_url")
    users = None
    uref = src.get("u.user")
    if uref is not None:
        users = read_delimited(
            uref,
            [
                Field("user_id", pl.Int64),
                Field("age", pl.Int64),
                Field("gender"),
                Field("occupation"),
                Field("zip"),
            ],
            sep="|",
            has_header=False,
            encoding=_LATIN1,
        ).with_columns(pl.col("age").cast(pl.Int32))
    return _finish(name, "movielens-100k", src, ratings, users, items, duplicates, ref, header=False)


def _movies_dat(src: Source) -> pl.DataFrame:
    ref = src.require("movies.dat", "movies: MovieID::Title::Genres")
    movies = read_delimited(
        ref,
        [Field("item_id", pl.Int64), Field("title"), Field("genres", nullable=True)],
        sep="::",
        has_header=False,
        encoding=_LATIN1,
    )
    return _title_year(movies).with_columns(_split_genres()).select("item_id", "title", "year", "genres")


def _load_dat(src: Source, name: str, fmt: str, duplicates: DuplicatePolicy) -> Dataset:
    ref = src.require("ratings.dat", "ratings: UserID::MovieID::Rating::Timestamp")
    ratings = read_delimited(ref, _RATING_FIELDS, sep="::", has_header=False, encoding=_LATIN1)
    items = _movies_dat(src)
    users = None
    if fmt == "movielens-1m":
        uref = src.require("users.dat", "users: UserID::Gender::Age::Occupation::Zip-code")
        users = read_delimited(
            uref,
            [
                Field("user_id", pl.Int64),
                Field("gender"),
                Field("age", pl.Int64),
                Field("occ", pl.Int64),
                Field("zip"),
            ],
            sep="::",
            has_header=False,
            encoding=_LATIN1,
        )
        bad = users.filter((pl.col("occ") < 0) | (pl.col("occ") >= len(ML1M_OCCUPATIONS)))
        if bad.height:
            raise DataFormatError(
                uref.display, None, f"occupation codes 0..{len(ML1M_OCCUPATIONS) - 1}", f"{bad['occ'][0]}"
            )
        users = users.select(
            "user_id",
            pl.col("age").cast(pl.Int32),
            "gender",
            pl.col("occ")
            .replace_strict(dict(enumerate(ML1M_OCCUPATIONS)), return_dtype=pl.String)
            .alias("occupation"),
            "zip",
        )
    tref = src.get("tags.dat")
    if tref is not None:
        tags = read_delimited(
            tref,
            [Field("user_id", pl.Int64), Field("item_id", pl.Int64), Field("tag", nullable=True)],
            sep="::",
            has_header=False,
            encoding=_LATIN1,
            n_fields=4,
        )
        items = _join_tags(items, tags)
    return _finish(name, fmt, src, ratings, users, items, duplicates, ref, header=False)


def _load_csv(src: Source, name: str, fmt: str, duplicates: DuplicatePolicy, genome: bool) -> Dataset:
    ref = src.require("ratings.csv", "ratings: userId,movieId,rating,timestamp")
    ratings = read_delimited(
        ref,
        [
            Field("userId", pl.Int64, out="user_id"),
            Field("movieId", pl.Int64, out="item_id"),
            Field("rating", pl.Float64),
            Field("timestamp", pl.Int64),
        ],
        sep=",",
        has_header=True,
    )
    mref = src.require("movies.csv", "movies: movieId,title,genres")
    items = read_delimited(
        mref,
        [Field("movieId", pl.Int64, out="item_id"), Field("title"), Field("genres", nullable=True)],
        sep=",",
        has_header=True,
        quote=True,
    )
    items = _title_year(items).with_columns(_split_genres()).select("item_id", "title", "year", "genres")
    lref = src.get("links.csv")
    if lref is not None:
        links = read_delimited(
            lref,
            [
                Field("movieId", pl.Int64, out="item_id"),
                Field("imdbId", pl.String, nullable=True, out="imdb"),
                Field("tmdbId", pl.Int64, nullable=True, out="tmdb"),
            ],
            sep=",",
            has_header=True,
            quote=True,
        )
        items = items.join(links, on="item_id", how="left")
    tref = src.get("tags.csv")
    if tref is not None:
        tags = read_delimited(
            tref,
            [Field("movieId", pl.Int64, out="item_id"), Field("tag", nullable=True)],
            sep=",",
            has_header=True,
            quote=True,
        )
        items = _join_tags(items, tags)
    meta: dict[str, Any] = {}
    gsref, gtref = src.get("genome-scores.csv"), src.get("genome-tags.csv")
    if genome and gsref is not None and gtref is not None:
        gtags = read_delimited(
            gtref, [Field("tagId", pl.Int64), Field("tag")], sep=",", has_header=True, quote=True
        ).sort("tagId")
        scores = read_delimited(
            gsref,
            [
                Field("movieId", pl.Int64, out="item_id"),
                Field("tagId", pl.Int64),
                Field("relevance", pl.Float64),
            ],
            sep=",",
            has_header=True,
        )
        n_tags = gtags.height
        per_movie = (
            scores.sort(["item_id", "tagId"])
            .group_by("item_id", maintain_order=True)
            .agg(pl.col("relevance").cast(pl.Float32).alias("genome"), pl.col("tagId").alias("_tags"))
        )
        complete = per_movie.filter(pl.col("_tags").list.len() == n_tags)
        if complete.height != per_movie.height:
            raise DataFormatError(
                gsref.display,
                None,
                f"{n_tags} genome scores per movie (one per genome tag)",
                "fewer for some",
            )
        items = items.join(complete.drop("_tags"), on="item_id", how="left")
        meta["genome_tags"] = gtags["tag"].to_list()
    return _finish(name, fmt, src, ratings, None, items, duplicates, ref, header=True, meta=meta)


def load_movielens(
    path: str | Path | None = None,
    *,
    format: str | None = None,
    duplicates: DuplicatePolicy = "last",
    genome: bool = True,
    name: str | None = None,
) -> Dataset:
    """Load a MovieLens dataset.

    ``path`` is a directory or .zip holding one of the MovieLens layouts; None or
    ``"ml-latest-small"`` for the copy bundled in the package (offline); another MovieLens name
    (``"ml-100k"``, ``"ml-1m"``...) is looked up in the data directories (`recstack.data.paths`).
    ``format`` forces a layout (``movielens-1m`` ...);
    without it the layout is detected from the files present. ``genome=False`` skips the (large)
    genome-scores table.
    """
    if path is None or (isinstance(path, str) and path == BUNDLED and not Path(path).exists()):
        path = bundled_path()
        name = name or BUNDLED
    elif isinstance(path, str) and path.lower() in _NAME_TO_FORMAT and not Path(path).exists():
        path = find_dataset(path.lower())
    src = Source(path)
    fmt = _normalise_format(format) if format else _detect(src)
    if format:
        detected = None
        with contextlib.suppress(DataFormatError):
            detected = _detect(src)
        family = {"movielens-100k": "100k", "movielens-1m": "dat", "movielens-10m": "dat"}
        if detected is None or family.get(detected, "csv") != family.get(fmt, "csv"):
            want = {
                "100k": "u.data, u.item",
                "dat": "ratings.dat, movies.dat",
                "csv": "ratings.csv, movies.csv",
            }
            raise DataFormatError(
                src.path,
                None,
                f"the files of {fmt} ({want[family.get(fmt, 'csv')]})",
                f"{sorted(src.names)[:10]}",
            )
    ds_name = name or fmt.replace("movielens-", "ml-")
    if fmt == "movielens-100k":
        return _load_100k(src, ds_name, duplicates)
    if fmt in ("movielens-1m", "movielens-10m"):
        return _load_dat(src, ds_name, fmt, duplicates)
    return _load_csv(src, ds_name, fmt, duplicates, genome)
