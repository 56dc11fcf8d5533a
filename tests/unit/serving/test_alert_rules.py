"""The shipped Prometheus alert rules and Grafana dashboard load, are well formed, and use only
metrics the app exports (names read from a real /metrics scrape after answers, events and drift);
`promtool check rules` passes (promtool comes from Debian's prometheus package: `make sysdeps`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from recstack.serving._release import MemoryRelease
from recstack.serving.api.app import create_app
from recstack.serving.settings import ServingSettings

OPS = resources.files("recstack.ops")
# PromQL words that are not metric names
_PROMQL = {
    "sum",
    "max",
    "min",
    "avg",
    "rate",
    "increase",
    "by",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "histogram_quantile",
    "clamp_min",
    "absent",
    "le",
    "bool",
    "and",
    "or",
    "unless",
    "without",
    "count",
}
_HIST = ("_bucket", "_count", "_sum")


def _metric_names(expr: str) -> set[str]:
    """The metric names of a PromQL expression (label matchers, label lists, ranges, strings out)."""
    expr = re.sub(r"\b(?:by|on|ignoring|without|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - _PROMQL
    return {w for w in words if w.startswith("recstack_")}


@pytest.fixture(scope="module")
def exported(tiny_release: MemoryRelease, tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    tmp = tmp_path_factory.mktemp("alerts")
    settings = ServingSettings(
        api_key="secret",
        event_log=f"sqlite:///{tmp / 'events.db'}",
        experiments_dir=tmp / "exp",
        drift_min_events=1,
    )
    with TestClient(create_app(settings, loader=lambda t: tiny_release)) as c:
        for u in (1, 2, "new"):
            assert c.get(f"/v1/users/{u}/recommendations").status_code == 200
        c.post("/v1/events", json={"user_id": 1, "item_id": 105, "type": "click"})
        c.app.state.online.refresh()
        text = c.get("/metrics").text
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {name + s for s in _HIST}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(OPS.joinpath("alerts.yml").read_text())
    return [r for g in data["groups"] for r in g["rules"]]


def test_alert_rules_are_well_formed_and_use_exported_metrics(exported: set[str]) -> None:
    rules = _rules()
    assert len(rules) >= 8
    for r in rules:
        assert set(r) >= {"alert", "expr", "labels", "annotations"}, r
        assert r["labels"]["severity"] in {"critical", "warning", "info"}
        assert r["annotations"]["summary"]
        used = _metric_names(r["expr"])
        assert used, r["alert"]
        assert used <= exported, f"{r['alert']} uses metrics the app does not export: {used - exported}"
    names = {r["alert"] for r in rules}
    assert {"RecstackInputDrift", "RecstackFallbackShareHigh", "RecstackCoverageLow"} <= names


def test_grafana_dashboard_uses_exported_metrics(exported: set[str]) -> None:
    dash = json.loads(OPS.joinpath("grafana-dashboard.json").read_text())
    assert dash["uid"] and dash["title"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["type"] in {"timeseries", "stat"} and p["targets"], p["title"]
        for t in p["targets"]:
            used = _metric_names(t["expr"].replace("$__rate_interval", "5m"))
            assert used and used <= exported, f"{p['title']}: {used - exported}"
    grid = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in dash["panels"]]
    assert len(grid) == len(set(grid))  # no two panels on one spot


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (make sysdeps installs Debian's prometheus)")
        pytest.skip("promtool not installed (make sysdeps installs it)")
    path = tmp_path / "alerts.yml"
    path.write_text(OPS.joinpath("alerts.yml").read_text())
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(_rules())} rules found" in out.stdout
