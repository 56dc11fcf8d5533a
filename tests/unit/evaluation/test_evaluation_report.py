"""The HTML / JSON report of a run_protocol result."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from recstack.evaluation.report import plot_curves, plot_popularity, render_html, write_html, write_json

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def result(tuned: bool = True, cold: bool = True) -> dict[str, Any]:
    def model(scale: float) -> dict[str, Any]:
        r: dict[str, Any] = {
            "precision@10": 0.3 * scale, "recall@10": 0.2 * scale, "ndcg@10": 0.4 * scale,
            "map@10": 0.25 * scale, "hr@10": 0.9 * scale, "mrr@10": 0.6 * scale, "coverage@10": 0.1,
            "novelty@10": 2.0, "diversity@10": None, "accuracy@100": 0.3 * scale, "fit_seconds": 1.25,
            "params": {"l2": 300.0}, "n_users": 10,
            "curves": {m: [0.1 * scale * k / 50 for k in range(1, 51)] for m in ("ndcg", "recall")},
            "popularity": [0.5, 0.3, 0.2, 0.0],
        }  # fmt: skip
        if cold:
            r["cold"] = {"ndcg@10": 0.1, "n_users": 3}
        if tuned:
            r["tuning"] = [[{"l2": 100.0}, 0.31], [{"l2": 300.0}, 0.35]]
        return r

    return {
        "dataset": "ml-100k",
        "protocol": "temporal",
        "seed": 42,
        "tuned": tuned,
        "results": {"ease": model(1.0), "pop<b>": model(0.5)},
        "catalog_popularity": [0.7, 0.2, 0.08, 0.02],
    }


def test_plots_are_png() -> None:
    for png in (plot_curves(result()), plot_popularity(result())):
        assert png is not None
        assert base64.b64decode(png).startswith(PNG_MAGIC)
    assert plot_curves({"results": {}}) is None
    assert plot_popularity({"results": {}}) is None


def test_html_report_is_self_contained_with_table_and_plots(tmp_path: Path) -> None:
    path = write_html(result(), tmp_path / "sub" / "report.html")
    html = path.read_text()
    imgs = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(imgs) == 2
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in imgs)
    assert not re.search(r'(src|href)="https?://', html)  # no CDN, nothing fetched
    assert "<th>NDCG@10</th>" in html and "0.4000" in html and "0.2000" in html  # ease, pop ndcg@10
    assert "pop&lt;b&gt;" in html  # names are escaped
    assert "Cold-start users" in html and "Tuning (validation NDCG@10)" in html
    assert 'class="best">0.4000' in html  # ease has the best NDCG@10
    assert "–" in html  # diversity None renders as a dash


def test_html_without_cold_or_tuning() -> None:
    html = render_html(result(tuned=False, cold=False))
    assert "Cold-start users" not in html and "Tuning (" not in html


def test_json_is_strict(tmp_path: Path) -> None:
    r = result()
    r["results"]["ease"]["novelty@10"] = float("nan")
    back = json.loads(write_json(r, tmp_path / "r.json").read_text())
    assert back["results"]["ease"]["novelty@10"] is None
    assert back["results"]["ease"]["tuning"][1] == [{"l2": 300.0}, pytest.approx(0.35)]


def test_plots_are_large_with_labelled_axes() -> None:
    """The release page shows each figure full width: every panel says what its axes are, the text is
    at least 11 pt and the figure is wide enough not to be blown up (issue 18)."""
    import matplotlib.pyplot as plt

    from recstack.evaluation.report import curves_figure, popularity_figure

    for make in (curves_figure, popularity_figure):
        fig = make(result())
        assert fig is not None
        try:
            assert fig.get_size_inches()[0] >= 14
            for ax in fig.axes:
                assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
                assert ax.xaxis.label.get_fontsize() >= 12
                assert min(t.get_fontsize() for t in ax.get_xticklabels()) >= 11
            legend = fig.axes[0].get_legend()
            assert legend is not None and "EASE" in [t.get_text() for t in legend.get_texts()]
        finally:
            plt.close(fig)
