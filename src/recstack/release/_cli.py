"""Rich rendering of releases for the `recstack build` / `recstack releases` commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from recstack.evaluation.report import TABLE_COLUMNS
from recstack.release.manifest import Manifest
from recstack.release.registry import ChannelState, Registry, ReleaseDiff

__all__ = [
    "EVAL_COLUMNS",
    "comparisons_of",
    "fit_seconds_of",
    "print_channel",
    "print_diff",
    "print_eval_table",
    "print_lineage",
    "print_list",
    "print_sample_intervals",
    "print_show",
    "releases_root",
]

#: (metric key, header) of the evaluation table: the evaluation layer's summary columns, metrics only
EVAL_COLUMNS: tuple[tuple[str, str], ...] = tuple(c for c in TABLE_COLUMNS if c[0] != "fit_seconds")


def releases_root(option: Path | None) -> Path:
    """The releases dir: the option, else Settings (``RECSTACK_RELEASES_DIR``, default ./releases)."""
    if option is not None:
        return option
    from recstack.config import get_settings

    return get_settings().releases_path()


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"  # pragma: no cover


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def print_eval_table(
    console: Console,
    manifest: Manifest,
    fit_seconds: dict[str, float] | None = None,
    comparisons: dict[str, list[dict[str, Any]]] | None = None,
) -> None:
    """The holdout metrics of every model, the headline model marked with *; with ``comparisons``
    (``temporal-rolling``: metrics.json's paired bootstrap CIs), the headline model against each other
    model."""
    proto = manifest.config.get("split", {})
    where = f"protocol {proto.get('protocol', '?')} (seed {proto.get('seed', '?')})"
    table = Table(title=f"{manifest.dataset.name} · {where}")
    table.add_column("model")
    cols = [(k, h) for k, h in EVAL_COLUMNS if any(k in m for m in manifest.metrics.values())]
    # the figures of the other protocols of the table (``[evaluation] also``): NDCG@10 of each
    also = proto.get("also") or manifest.config.get("evaluation", {}).get("also") or []
    cols += [(f"{p}:ndcg@10", f"NDCG@10 {p}") for p in also]
    for _, header in cols:
        table.add_column(header, justify="right")
    if fit_seconds:
        table.add_column("fit s", justify="right")
    head = manifest.headline.model if manifest.headline else None
    for name, m in manifest.metrics.items():
        row = [f"{name} *" if name == head else name] + [_fmt(m.get(k)) for k, _ in cols]
        if fit_seconds:
            secs = fit_seconds.get(name)
            row.append("–" if secs is None else f"{secs:.2f}")  # seconds, as `recstack evaluate` shows them
        table.add_row(*row)
    console.print(table)
    for group, rows in (comparisons or {}).items():
        for c in rows:
            if head not in (c["a"], c["b"]) or c.get("diff") is None:
                continue
            sign = 1.0 if c["b"] == head else -1.0
            other = c["a"] if c["b"] == head else c["b"]
            lo, hi = sorted(sign * v for v in c["ci95"])
            console.print(
                f"{group} users: {head} - {other} {c['metric']} {sign * c['diff']:+.4f} "
                f"(paired bootstrap 95% CI {lo:+.4f} .. {hi:+.4f}, {c['n_units']} user-windows)"
            )
    if manifest.skipped:
        console.print("skipped: " + "; ".join(f"{k} ({v})" for k, v in manifest.skipped.items()))


def _metrics_json(root: Path, manifest: Manifest) -> dict[str, Any]:
    try:
        data = json.loads((root / manifest.id / manifest.artifacts.metrics).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def fit_seconds_of(root: Path, manifest: Manifest) -> dict[str, float]:
    """Per-model fit seconds from the release's metrics.json (empty when absent)."""
    data = _metrics_json(root, manifest)
    return {k: float(v.get("fit_seconds", 0.0)) for k, v in data.get("results", {}).items()}


def print_sample_intervals(console: Console, metrics_json: Path) -> None:
    """For a ``--sample-users`` build: each model's sample size and the 95% interval of NDCG@10 and
    Recall@10 (from metrics.json's ``"sample"``)."""
    try:
        data = json.loads(metrics_json.read_text())
    except (OSError, json.JSONDecodeError):
        return
    for name, res in data.get("results", {}).items():
        sample = res.get("sample")
        if not sample:
            continue
        ci = sample.get("ci95", {})
        parts = [
            f"{m} {res.get(m, 0.0):.4f} [{ci[m][0]:.4f}, {ci[m][1]:.4f}]"
            for m in ("ndcg@10", "recall@10")
            if m in ci
        ]
        console.print(
            f"{name}: {sample['n_users']:,} of {sample['of']:,} users sampled; 95% CI " + ", ".join(parts)
        )


def comparisons_of(root: Path, manifest: Manifest) -> dict[str, list[dict[str, Any]]]:
    """The paired bootstrap CIs of a ``temporal-rolling`` build (metrics.json; empty when absent)."""
    comps = _metrics_json(root, manifest).get("comparisons")
    return comps if isinstance(comps, dict) else {}


def print_list(console: Console, registry: Registry) -> None:
    targets: dict[str, list[str]] = {}
    for ch, rid in registry.channel_targets().items():
        targets.setdefault(rid, []).append(ch)
    table = Table(title=f"releases in {registry.root}")
    table.add_column("id", no_wrap=True)
    table.add_column("channels", style="green")
    table.add_column("dataset")
    table.add_column("models")
    table.add_column("headline", justify="right")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("parent", no_wrap=True)
    for m in registry.list():
        hv = m.headline_value()
        head = f"{hv:.4f} {m.headline.metric} {m.headline.model}" if m.headline and hv is not None else "–"
        table.add_row(
            m.id,
            ", ".join(targets.get(m.id, [])),
            m.dataset.name,
            ", ".join(m.artifacts.retrievers),
            head,
            _size(m.total_size()),
            m.parent[-7:] if m.parent else "–",
        )
    console.print(table)


def print_show(console: Console, manifest: Manifest) -> None:
    info = Table(title=f"release {manifest.id}", show_header=False)
    info.add_column("key")
    info.add_column("value")
    info.add_row("created", manifest.created_at.isoformat())
    ds = manifest.dataset
    info.add_row("dataset", f"{ds.name} ({', '.join(f'{k} {v}' for k, v in ds.counts.items())})")
    info.add_row("fingerprint", ds.fingerprint[:16] + "…")
    info.add_row("package", manifest.package_version)
    info.add_row("git commit", manifest.git_commit or "–")
    info.add_row("parent", manifest.parent or "–")
    if manifest.headline:
        info.add_row("headline", f"{manifest.headline.metric} of {manifest.headline.model}")
    arts = manifest.artifacts
    info.add_row("retrievers", ", ".join(arts.retrievers) or "–")
    info.add_row("rankers", ", ".join(arts.rankers) or "–")
    if arts.index:
        info.add_row(
            "index", f"{arts.index.backend} ({arts.index.dim}-d {arts.index.metric}, {arts.index.source})"
        )
    info.add_row("files", f"{len(manifest.files)} files, {_size(manifest.total_size())}")
    info.add_row("timings", ", ".join(f"{k} {v:.1f}s" for k, v in manifest.timings.items()))
    console.print(info)
    print_eval_table(console, manifest)


def print_diff(console: Console, d: ReleaseDiff) -> None:
    console.print(f"[bold]{d.a}[/bold] → [bold]{d.b}[/bold]")
    if d.dataset_changed:
        console.print("dataset: [yellow]changed[/yellow] (different fingerprint)")
    if d.config:
        t = Table(title="config changes")
        for c in ("key", d.a, d.b):
            t.add_column(c)
        for k, (va, vb) in d.config.items():
            t.add_row(k, json.dumps(va), json.dumps(vb))
        console.print(t)
    else:
        console.print("config: identical")
    keys = [k for k in d.metrics if k[1] in {c for c, _ in EVAL_COLUMNS}]
    if keys:
        t = Table(title="metrics")
        for c in ("model", "metric", d.a, d.b, "change"):
            t.add_column(c, justify="left" if c in ("model", "metric") else "right")
        for model, metric in keys:
            va, vb = d.metrics[(model, metric)]
            change = "–"
            if va is not None and vb is not None:
                rel = f" ({100 * (vb - va) / va:+.1f}%)" if va else ""
                change = f"{vb - va:+.4f}{rel}"
            t.add_row(model, metric, _fmt(va), _fmt(vb), change)
        console.print(t)
    console.print(
        f"files: {len(d.files_added)} added, {len(d.files_removed)} removed, {len(d.files_changed)} changed"
    )
    for label, paths in (("+", d.files_added), ("-", d.files_removed), ("~", d.files_changed)):
        for p in paths:
            console.print(f"  {label} {p}")


def print_lineage(console: Console, chain: list[tuple[str, Manifest | None]]) -> None:
    table = Table(title="lineage (newest first)")
    table.add_column("id", no_wrap=True)
    for c in ("created (UTC)", "dataset", "headline"):
        table.add_column(c)
    for rid, m in chain:
        if m is None:
            table.add_row(rid, "[red]deleted or unreadable[/red]", "", "")
            continue
        hv = m.headline_value()
        table.add_row(
            rid,
            m.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{m.dataset.name} {m.dataset.fingerprint[:8]}",
            f"{m.headline.metric} {hv:.4f}" if m.headline and hv is not None else "–",
        )
    console.print(table)


def print_channel(console: Console, state: ChannelState, action: str) -> None:
    prev = state.previous
    console.print(
        f"{action}: [bold]{state.channel}[/bold] → [green]{state.current}[/green]"
        + (f" (rollback target {prev})" if prev else "")
    )
