"""An experiment's report as a table (rich), JSON and a self-contained HTML page with plots.

Input: the dict of `recstack.experiments.analyse`. The HTML page follows the evaluation report's
style (inline CSS, plots as base64 PNG drawn with matplotlib's Agg backend, no external resources):
per-arm CTR / hit-rate / mean rating with confidence intervals, CTR by position, cumulative CTR.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
from pathlib import Path
from typing import Any

from recstack import __version__
from recstack.evaluation.report import _figure_png, _pyplot, to_jsonable
from recstack.experiments.analysis import RATIO_METRICS

__all__ = ["METRIC_LABELS", "render_html", "report_table", "write_html", "write_json"]

METRIC_LABELS = {"ctr": "CTR", "hit_rate": "hit-rate@k", "mean_rating": "mean rating"}
_COLORS = ("#1f6feb", "#d9480f", "#2b8a3e", "#862e9c", "#5c7cfa", "#e67700")


def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _p(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.2g}" if v < 0.001 else f"{v:.3f}"


def report_rows(rep: dict[str, Any]) -> list[dict[str, str]]:
    """One row of formatted cells per arm (the CLI table and the HTML table)."""
    rows = []
    for arm, a in rep["arms"].items():
        t = rep["tests"].get(arm, {})
        row = {
            "arm": arm + (" (control)" if arm == rep["control"] else ""),
            "users": str(a["users"]),
            "impressions": str(a["impressions"]),
            "clicks": str(a["clicks"]),
        }
        for m, _, _ in RATIO_METRICS:
            est = a[m]
            row[m] = f"{_f(est['value'])} [{_f(est['ci'][0])}, {_f(est['ci'][1])}]"
            row[f"p_{m}"] = _p(t[m]["p_value"]) if m in t else ""
        row["coverage"] = _f(a["coverage"], 3) if a["coverage"] is not None else str(a["distinct_items"])
        rows.append(row)
    return rows


def report_table(rep: dict[str, Any]) -> Any:
    """A rich Table of the report."""
    from rich.table import Table

    k = rep["k"]
    level = round(rep["level"] * 100)
    table = Table(
        title=f"experiment {rep['experiment']} ({rep['status']}): {level}% CIs, p vs {rep['control']}"
    )
    cols = [
        ("arm", "arm"),
        ("users", "users"),
        ("impressions", "impr."),
        ("clicks", "clicks"),
        ("ctr", "CTR"),
        ("p_ctr", "p"),
        ("hit_rate", f"hit-rate@{k}"),
        ("p_hit_rate", "p"),
        ("mean_rating", "mean rating"),
        ("p_mean_rating", "p"),
        ("coverage", "coverage"),
    ]
    for key, label in cols:
        table.add_column(label, justify="left" if key == "arm" else "right")
    for row in report_rows(rep):
        table.add_row(*(row[key] for key, _ in cols))
    return table


def verdict(rep: dict[str, Any]) -> str:
    """One sentence: the better arm and its p-value, or that no arm is better at alpha."""
    w = rep.get("winner")

    def name(m: str) -> str:
        return METRIC_LABELS.get(m, m).replace("@k", f"@{rep['k']}")

    label = name(rep["primary"])
    srm = rep.get("srm") or {}
    warn = ""
    if srm.get("mismatch"):
        warn = (
            f" WARNING: users per arm do not match the shares (SRM p = {_p(srm['p_value'])}): "
            "check assignment."
        )
    sec = rep.get("secondary") or {}
    also = ""
    if sec:
        parts = [f"{x['arm']} on {METRIC_LABELS.get(m, m)} (p = {_p(x['p_value'])})" for m, x in sec.items()]
        also = " Secondary metrics (not corrected for multiple testing): better " + "; ".join(parts) + "."
    if w is None:
        return f"No arm is better on {label} at alpha = {rep['alpha']}.{also}{warn}"
    return f"{w['arm']} is better on {label} (p = {_p(w['p_value'])} < {rep['alpha']}).{also}{warn}"


def write_json(rep: dict[str, Any], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(to_jsonable(rep), indent=2), encoding="utf-8")
    return p


# --------------------------------------------------------------------------------------- plots
def plot_metrics(rep: dict[str, Any]) -> str | None:
    """Each ratio metric per arm with its CI (base64 PNG)."""
    arms = list(rep["arms"])
    if not arms or not any(rep["arms"][a]["users"] for a in arms):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(RATIO_METRICS), figsize=(4.2 * len(RATIO_METRICS), 3.2))
    for ax, (m, _, _) in zip(axes, RATIO_METRICS, strict=True):
        for i, arm in enumerate(arms):
            est = rep["arms"][arm][m]
            v, (lo, hi) = est["value"], est["ci"]
            if v is None or not math.isfinite(v):
                continue
            err = [[v - lo], [hi - v]] if math.isfinite(lo) else None
            ax.errorbar([i], [v], yerr=err, fmt="o", capsize=6, color=_COLORS[i % len(_COLORS)], ms=7)
        ax.set_xticks(range(len(arms)), arms)
        ax.set_xlim(-0.6, len(arms) - 0.4)
        label = METRIC_LABELS[m].replace("@k", f"@{rep['k']}")
        ax.set_title(f"{label} ({round(rep['level'] * 100)}% CI)")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return str(_figure_png(fig))


def plot_positions(rep: dict[str, Any]) -> str | None:
    """CTR by position per arm."""
    data = {a: d for a, d in rep.get("by_position", {}).items() if d["position"]}
    if not data:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, (arm, d) in enumerate(data.items()):
        ax.plot(d["position"], d["ctr"], marker="o", label=arm, color=_COLORS[i % len(_COLORS)])
    ax.set_xlabel("position")
    ax.set_ylabel("CTR")
    ax.set_title("CTR by position")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return str(_figure_png(fig))


def plot_timeline(rep: dict[str, Any]) -> str | None:
    """Cumulative CTR per arm as impressions accumulate."""
    data = rep.get("timeline") or {}
    if not data:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, (arm, d) in enumerate(data.items()):
        ax.plot(d["impressions"], d["ctr"], label=arm, color=_COLORS[i % len(_COLORS)])
    ax.set_xlabel("impressions of the arm")
    ax.set_ylabel("cumulative CTR")
    ax.set_title("CTR as the experiment ran")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return str(_figure_png(fig))


# ---------------------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.meta { color: #666; font-size: .9rem; }
.verdict { font-size: 1.05rem; padding: .6rem .9rem; border-left: 4px solid #1f6feb; background: #f3f7ff; }
.verdict.none { border-color: #999; background: #f6f6f6; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th { background: #f5f5f5; border-bottom: 2px solid #ccc; }
td.name, th.name { text-align: left; font-weight: 600; }
td.sig { font-weight: 700; color: #0b6e4f; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #555; font-size: .85rem; max-width: 60rem; }
.scroll { overflow-x: auto; }
"""


def render_html(rep: dict[str, Any]) -> str:
    """The self-contained HTML page of a report."""
    e = html.escape
    k = rep["k"]
    level = round(rep["level"] * 100)
    head = (
        "<tr><th class='name'>arm</th><th>users</th><th>impressions</th><th>clicks</th>"
        f"<th>CTR [{level}% CI]</th><th>p</th><th>hit-rate@{k}</th><th>p</th>"
        "<th>mean rating</th><th>p</th><th>coverage</th></tr>"
    )
    body = []
    for row in report_rows(rep):

        def cell(key: str, row: dict[str, str] = row) -> str:
            p = row.get(key, "")
            sig = p not in ("", "–") and float(p) < rep["alpha"]
            return f"<td class='{'sig' if sig else ''}'>{e(p)}</td>"

        body.append(
            f"<tr><td class='name'>{e(row['arm'])}</td><td>{row['users']}</td><td>{row['impressions']}</td>"
            f"<td>{row['clicks']}</td><td>{e(row['ctr'])}</td>{cell('p_ctr')}"
            f"<td>{e(row['hit_rate'])}</td>{cell('p_hit_rate')}<td>{e(row['mean_rating'])}</td>"
            f"{cell('p_mean_rating')}<td>{e(row['coverage'])}</td></tr>"
        )
    diffs = []
    for arm, t in rep["tests"].items():
        for m, d in t.items():
            diffs.append(
                f"<tr><td class='name'>{e(arm)} − {e(rep['control'])}</td>"
                f"<td class='name'>{METRIC_LABELS[m]}</td>"
                f"<td>{_f(d['diff'])}</td><td>[{_f(d['ci'][0])}, {_f(d['ci'][1])}]</td>"
                f"<td>{_f(d['relative'] * 100 if isinstance(d['relative'], float) else None, 1)}%</td>"
                f"<td>{_p(d['p_value'])}</td></tr>"
            )
    seg_rows = []
    for seg, d in (rep.get("segments") or {}).items():
        for arm, n in d["users"].items():
            t = d["tests"].get(arm)
            seg_rows.append(
                f"<tr><td class='name'>{e(seg)}</td><td class='name'>{e(arm)}</td><td>{n}</td>"
                f"<td>{_f(d['ctr'][arm])}</td><td>{_p(t['p_value']) if t else 'control'}</td></tr>"
            )
    segments = (
        "<h2>By user segment (exploratory)</h2><div class='scroll'><table><thead><tr>"
        "<th class='name'>users</th><th class='name'>arm</th><th>users</th><th>CTR</th><th>p</th>"
        f"</tr></thead><tbody>{''.join(seg_rows)}</tbody></table></div>"
        "<p class='note'>new: no history at their first answer (new visitors, users without "
        "interactions); returning: the others. Subgroup "
        "tests are not corrected for multiple testing.</p>"
        if seg_rows
        else ""
    )
    srm = rep.get("srm") or {}
    plots = [
        ("Metrics per arm with confidence intervals", plot_metrics(rep)),
        ("CTR by position", plot_positions(rep)),
        ("Cumulative CTR", plot_timeline(rep)),
    ]
    imgs = "".join(
        f'<figure><img alt="{e(alt)}" src="data:image/png;base64,{png}">'
        f'<figcaption class="note">{e(alt)}</figcaption></figure>'
        for alt, png in plots
        if png
    )
    shares = ", ".join(f"{e(a)} {s:.0%}" for a, s in rep["shares"].items())
    generated = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    vclass = "verdict" if rep.get("winner") else "verdict none"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>recstack experiment · {e(rep["experiment"])}</title><style>{_CSS}</style></head>
<body>
<h1>Experiment <code>{e(rep["experiment"])}</code></h1>
<p class="meta">{e(rep["status"])} · created {e(str(rep.get("created_at") or "–"))}
{" · stopped " + e(str(rep["stopped_at"])) if rep.get("stopped_at") else ""} · shares {shares}
· attribution window {rep["window_s"]:g} s · recstack {__version__} · {generated}</p>
<p class="{vclass}">{e(verdict(rep))}</p>
<h2>Arms</h2>
<div class="scroll"><table><thead>{head}</thead><tbody>{"".join(body)}</tbody></table></div>
<p class="note">CTR = attributed clicks / items shown; hit-rate@{k} = share of impressions with a clicked or
rated item in the top {k}; mean rating of the rated shown items. Intervals and p-values come from the
delta method over users (the unit of assignment); p is the two-sided z-test of the arm against the
control <b>{e(rep["control"])}</b>; bold: p &lt; {rep["alpha"]}. Coverage = distinct items shown /
catalogue size. Sample-ratio check (users per arm against the shares): p = {_p(srm.get("p_value"))}.</p>
<h2>Differences from the control</h2>
<div class="scroll"><table><thead>
<tr><th class="name">arms</th><th class="name">metric</th><th>difference</th>
<th>{level}% CI</th><th>relative</th><th>p</th></tr></thead><tbody>{"".join(diffs)}</tbody></table></div>
{segments}
<h2>Plots</h2>
{imgs or '<p class="note">No impressions yet: nothing to plot.</p>'}
</body></html>
"""


def write_html(rep: dict[str, Any], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(rep), encoding="utf-8")
    return p
