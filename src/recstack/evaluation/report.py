"""Evaluation reports: JSON and a self-contained HTML page (jinja2 template, plots as inline base64 PNG
drawn with matplotlib's Agg backend, no external resources).

Input is the dict returned by `recstack.evaluation.run_protocol`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from recstack import __version__

__all__ = [
    "PLOT_STYLE",
    "TABLE_COLUMNS",
    "curves_figure",
    "plot_curves",
    "plot_popularity",
    "popularity_figure",
    "print_rolling",
    "render_html",
    "rolling_rows",
    "to_jsonable",
    "write_html",
    "write_json",
]

#: (key in the per-model dict, column header) of the summary tables (CLI and HTML)
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("precision@10", "P@10"),
    ("recall@10", "R@10"),
    ("ndcg@10", "NDCG@10"),
    ("map@10", "MAP@10"),
    ("hr@10", "HR@10"),
    ("coverage@10", "Cov@10"),
    ("accuracy@100", "Acc@100"),
    ("fit_seconds", "fit_s"),
)
_EXTRA_COLUMNS: tuple[tuple[str, str], ...] = (
    ("mrr@10", "MRR@10"),
    ("novelty@10", "Novelty@10 (bits)"),
    ("diversity@10", "Diversity@10"),
    ("accuracy@1", "Acc@1"),
    ("accuracy@5", "Acc@5"),
    ("accuracy@10", "Acc@10"),
    ("accuracy@50", "Acc@50"),
)
_CURVES = (("ndcg", "NDCG@K"), ("precision", "Precision@K"), ("recall", "Recall@K"))


def to_jsonable(obj: Any) -> Any:
    """A copy of ``obj`` that `json.dumps` accepts strictly: NaN / inf -> None, numpy scalars and
    arrays -> Python numbers and lists, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return to_jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    """Write the result dict as indented JSON (strict: no NaN)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(to_jsonable(result), indent=2, allow_nan=False) + "\n")
    return p


# ------------------------------------------------------------------------------------------ plots
def _figure_png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


#: text sizes of the report's figures (points; shown about 1,200 px wide on the release page, the
#: figures' text reads at about the page's own size)
PLOT_STYLE = {
    "font.size": 13,
    "axes.titlesize": 14,
    "axes.labelsize": 13,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 11,
    "figure.titlesize": 15,
}


def _label(name: str) -> str:
    from recstack.models.registry import display_name

    return display_name(name)


def curves_figure(result: dict[str, Any]) -> Any | None:
    """NDCG, precision and recall @K for K = 1..len(curve), one line per model (a matplotlib figure;
    None when no model has curves)."""
    models = {m: r["curves"] for m, r in result.get("results", {}).items() if r.get("curves")}
    if not models:
        return None
    plt = _pyplot()
    with plt.rc_context(PLOT_STYLE):
        fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
        for ax, (key, label) in zip(axes, _CURVES, strict=True):
            for name, curves in models.items():
                ys = curves.get(key) or []
                ax.plot(range(1, len(ys) + 1), ys, label=_label(name), linewidth=2.2)
            ax.set_title(label)
            ax.set_xlabel("K (length of the recommended list)")
            ax.set_ylabel(label)
            ax.grid(True, alpha=0.3)
            ax.axvline(10, color="grey", linewidth=0.9, linestyle=":")
        axes[0].legend()
        fig.suptitle(f"{result.get('dataset', '')} / {result.get('protocol', '')}: metric@K")
        fig.tight_layout()
    return fig


def plot_curves(result: dict[str, Any]) -> str | None:
    """`curves_figure` as a base64 PNG (None when no model has curves)."""
    fig = curves_figure(result)
    return None if fig is None else _figure_png(fig)


def popularity_figure(result: dict[str, Any]) -> Any | None:
    """Popularity of the recommended items against the catalog (a matplotlib figure; None without data).

    Items are sorted by training popularity and cut into equal bins (most popular first). Left: share of
    the catalog's interactions and of each model's top-10 recommendations per bin (log scale). Right:
    the cumulative shares (a long-tail / Lorenz view: how much of what is recommended comes from the
    x% most popular items).
    """
    catalog: Sequence[float] = result.get("catalog_popularity") or []
    models = {m: r["popularity"] for m, r in result.get("results", {}).items() if r.get("popularity")}
    if not catalog or not models:
        return None
    plt = _pyplot()
    n_bins = len(catalog)
    width = 100.0 / n_bins
    xs = [width * (i + 0.5) for i in range(n_bins)]
    with plt.rc_context(PLOT_STYLE):
        fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5.8))
        left.bar(
            xs,
            [max(c, 1e-6) for c in catalog],
            width=width * 0.95,
            color="#cccccc",
            label="catalog interactions",
        )
        for name, share in models.items():
            left.plot(
                xs,
                [s if s > 0 else float("nan") for s in share],
                marker="o",
                markersize=4.5,
                linewidth=2.0,
                label=_label(name),
            )
        left.set_yscale("log")
        left.set_ylim(1e-4, 1.5)
        left.set_xlabel("item popularity rank (% of catalog, most popular first)")
        left.set_ylabel("share of items per bin (log scale)")
        left.set_title("Where the top-10 recommendations come from")
        left.grid(True, alpha=0.3)
        left.legend()

        def cum(v: Sequence[float]) -> list[float]:
            out, s = [0.0], 0.0
            for x in v:
                s += x
                out.append(s)
            return out

        cx = [width * i for i in range(n_bins + 1)]
        right.plot(
            cx, cum(catalog), color="black", linewidth=2.4, linestyle="--", label="catalog interactions"
        )
        right.plot(cx, [x / 100 for x in cx], color="grey", linewidth=1.2, linestyle=":", label="uniform")
        for name, share in models.items():
            right.plot(cx, cum(share), linewidth=2.2, label=_label(name))
        right.set_xlabel("top x% most popular items")
        right.set_ylabel("cumulative share of recommendations")
        right.set_title("Long tail: cumulative share of recommendations")
        right.grid(True, alpha=0.3)
        right.legend(loc="lower right")
        fig.tight_layout()
    return fig


def plot_popularity(result: dict[str, Any]) -> str | None:
    """`popularity_figure` as a base64 PNG (None without data)."""
    fig = popularity_figure(result)
    return None if fig is None else _figure_png(fig)


# ------------------------------------------------------------------------------- temporal-rolling
def rolling_rows(result: dict[str, Any], metric: str = "ndcg@10") -> dict[str, Any]:
    """The ``temporal-rolling`` figures of a `run_protocol` result as plain rows: ``{"windows":
    [header...], "models": [[model, per-window warm ``metric``..., mean, cold mean]], "comparisons":
    [[group, "B - A", diff, low, high, B / A]]}``."""
    res: dict[str, Any] = result.get("results", {})
    wins = result.get("windows", [])
    headers = [f"w{w['window']} ({w['warm_users']}+{w['cold_users']})" for w in wins]
    models = []
    for name, r in res.items():
        per = [w["warm"].get(metric) for w in r.get("windows", [])]
        models.append([name, *per, r.get(metric), r.get("cold", {}).get(metric)])
    comps = []
    for group, rows in (result.get("comparisons") or {}).items():
        for c in rows:
            if c.get("metric") != metric:
                continue
            lo, hi = c["ci95"]
            comps.append([group, f"{c['b']} - {c['a']}", c["diff"], lo, hi, c.get("ratio")])
    return {"windows": headers, "models": models, "comparisons": comps, "metric": metric}


def print_rolling(console: Any, result: dict[str, Any], metric: str = "ndcg@10") -> None:
    """Rich tables of a ``temporal-rolling`` result: ``metric`` per window (warm users; the header says
    warm+cold users), the mean over windows, cold users' mean; then the paired bootstrap 95% CI of the
    difference between every two models (warm and cold users)."""
    from rich.table import Table

    rows = rolling_rows(result, metric)
    t = Table(title=f"temporal-rolling · {metric} per window (warm users)")
    t.add_column("model", style="bold")
    for h in [*rows["windows"], "mean", "cold mean"]:
        t.add_column(h, justify="right")
    for r in rows["models"]:
        t.add_row(r[0], *[_fmt(v) for v in r[1:]])
    console.print(t)
    c = Table(title=f"paired bootstrap 95% CI of the {metric} difference (users resampled per window)")
    for h in ("users", "B - A", "diff", "CI low", "CI high", "B / A"):
        c.add_column(h, justify="right" if h not in ("users", "B - A") else "left")
    for r in rows["comparisons"]:
        c.add_row(r[0], r[1], *[_fmt(v) for v in r[2:]])
    console.print(c)


# ------------------------------------------------------------------------------------------- HTML
def _fmt(value: Any, key: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if key == "fit_seconds":
            return f"{value:.2f}"
        if key.startswith("novelty"):
            return f"{value:.2f}"
        return f"{value:.4f}"
    return str(value)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("recstack.evaluation", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = _fmt
    env.filters["params"] = lambda p: ", ".join(f"{k}={v}" for k, v in (p or {}).items())
    return env


def render_html(result: dict[str, Any]) -> str:
    """The self-contained HTML report of a `run_protocol` result."""
    results: dict[str, Any] = result.get("results", {})
    best: dict[str, str] = {}
    for key, _ in TABLE_COLUMNS + _EXTRA_COLUMNS:
        vals = {m: r.get(key) for m, r in results.items() if isinstance(r.get(key), (int, float))}
        if vals and key != "fit_seconds":
            best[key] = max(vals, key=lambda m: vals[m])
    has_cold = any("cold" in r for r in results.values())
    has_tuning = any(r.get("tuning") for r in results.values())
    columns = [c for c in TABLE_COLUMNS + _EXTRA_COLUMNS if any(c[0] in r for r in results.values())]
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            result=result,
            results=results,
            columns=columns,
            cold_columns=[c for c in columns if c[0] != "fit_seconds"],
            best=best,
            has_cold=has_cold,
            has_tuning=has_tuning,
            curves_png=plot_curves(result),
            popularity_png=plot_popularity(result),
            rolling=rolling_rows(result) if result.get("comparisons") else None,
            version=__version__,
            generated=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        )
    )


def write_html(result: dict[str, Any], path: str | Path) -> Path:
    """Render the HTML report into ``path``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(result), encoding="utf-8")
    return p
