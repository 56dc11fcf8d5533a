"""recstack.text: item texts, the sentence-transformers encoder, its on-disk cache and the ONNX
export that serving runs (parity with sentence-transformers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recstack.data.dataset import Dataset
from recstack.data.movielens import load_movielens
from recstack.text import (
    OnnxTextEncoder,
    TextEncoder,
    TextEncoderConfig,
    compose_text,
    embed_items,
    export_onnx,
    item_texts,
)
from recstack.text import encoder as encoder_mod


def _tiny() -> Dataset:
    inter = pl.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 20, 30], "rating": [4.0, 3.0, 5.0]})
    items = pl.DataFrame(
        {
            "item_id": [10, 20, 30],
            "title": ["Star Wars", "Notting Hill", None],
            "year": [1977, 1999, None],
            "genres": [["Action", "Sci-Fi"], ["Comedy", "Romance"], []],
            "tags": [["space", "robots", "classic"], [], []],
            "genome": [[0.1, 0.9, 0.5], [0.8, 0.2, 0.1], None],
            "text": [None, None, "A documentary about bees."],
        },
        schema_overrides={"genome": pl.List(pl.Float32)},
    )
    return Dataset.from_frames("tiny", inter, items=items, meta={"genome_tags": ["romance", "space", "war"]})


def test_item_texts_title_year_genres_top_tags_genome_and_text() -> None:
    texts = item_texts(_tiny(), top_tags=2, top_genome=2)
    # genome: relevance 0.9 (space) then 0.5 (war); only the first two tags
    assert texts[0] == "Star Wars (1977). Genres: Action, Sci-Fi. Tags: space, robots. Themes: space, war."
    assert texts[1] == "Notting Hill (1999). Genres: Comedy, Romance. Themes: romance, space."
    assert texts[2] == "A documentary about bees."
    assert compose_text(None) == ""


def test_movielens_tags_most_applied_first(tmp_path: Path) -> None:
    d = tmp_path / "ml-latest-small"
    d.mkdir()
    (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,100\n2,1,3.5,200\n")
    (d / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n")
    (d / "links.csv").write_text("movieId,imdbId,tmdbId\n1,0114709,862\n")
    (d / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n1,1,fun,1\n2,1,pixar,2\n3,1,pixar,3\n4,1,animation,4\n"
    )
    ds = load_movielens(d)
    row = ds.items.row(0, named=True)
    # pixar applied twice comes first; the single ones alphabetically
    assert row["tags"] == ["pixar", "animation", "fun"]
    assert (row["imdb"], row["tmdb"]) == ("0114709", 862)
    assert item_texts(ds)[0] == "Toy Story (1995). Genres: Animation, Comedy. Tags: pixar, animation, fun."


@pytest.fixture(scope="session")
def encoder() -> TextEncoder:
    return TextEncoder()


def test_encode_unit_vectors_and_meaning(encoder: TextEncoder) -> None:
    texts = [
        "Star Wars (1977). Genres: Action, Adventure, Sci-Fi. Tags: space, robots, jedi.",
        "Notting Hill (1999). Genres: Comedy, Romance. Tags: london, love story.",
        "Babe (1995). Genres: Children, Drama. Tags: pig, farm animals.",
    ]
    emb = encoder.encode(texts)
    assert emb.shape == (3, encoder.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    q = encoder.encode(["space opera with robots"])[0]
    assert int(np.argmax(emb @ q)) == 0
    assert encoder.encode([]).shape == (0, encoder.dim)


def test_embed_items_cached_per_text(
    encoder: TextEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = _tiny()
    first = embed_items(ds, cache_dir=tmp_path, progress=False)
    assert first.shape == (3, encoder.dim)
    assert len(list(tmp_path.glob("texts-*.vectors.npy"))) == 1

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("encoded again instead of reading the cache")

    with monkeypatch.context() as m:
        m.setattr(encoder_mod.TextEncoder, "encode", refuse)
        np.testing.assert_array_equal(embed_items(ds, cache_dir=tmp_path), first)
    # other texts (one tag instead of ten for Star Wars): only the changed text is encoded
    encoded: list[list[str]] = []
    real = encoder_mod.TextEncoder.encode

    def spy(self: TextEncoder, texts: list[str], **kwargs: object) -> np.ndarray:
        encoded.append(list(texts))
        return real(self, texts)

    with monkeypatch.context() as m:
        m.setattr(encoder_mod.TextEncoder, "encode", spy)
        other = embed_items(ds, TextEncoderConfig(top_tags=1), cache_dir=tmp_path, progress=False)
    assert encoded == [
        ["Star Wars (1977). Genres: Action, Sci-Fi. Tags: space. Themes: space, war, romance."]
    ]
    assert not np.allclose(other[0], first[0])
    np.testing.assert_array_equal(other[1:], first[1:])  # the other texts did not change
    assert len(list(tmp_path.glob("texts-*.vectors.npy"))) == 1  # same model: one store
    assert encoder.encode(["x"]).shape == (1, encoder.dim)
    np.testing.assert_allclose(embed_items(ds, cache=False, progress=False), first, atol=1e-6)


@pytest.mark.slow  # the first export traces the transformer: ~10 s (then cached)
def test_onnx_export_matches_sentence_transformers(encoder: TextEncoder, text_cache_dir: str) -> None:
    d = export_onnx(cache_dir=text_cache_dir)
    assert {"model.onnx", "tokenizer.json", "encoder.json"} <= {p.name for p in d.iterdir()}
    assert export_onnx(cache_dir=text_cache_dir) == d  # exported once, reused
    onnx = OnnxTextEncoder(d)
    texts = ["space opera with robots", "a much longer text " * 20, "Toy Story (1995)"]
    np.testing.assert_allclose(onnx.encode(texts), encoder.encode(texts), atol=1e-4)
    assert onnx.encode([]).shape == (0, onnx.dim)
