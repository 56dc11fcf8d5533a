"""Writing a benchmark's JSON to ``benchmarks/results/``: whole, or as one labelled run among others."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(path: Path, results: dict[str, Any], label: str | None = None) -> None:
    """Write ``results`` to ``path``; with ``label``, as the entry ``label`` of the file's runs (the
    others kept; a file that holds one unlabelled run keeps it as ``before``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if label is not None:
        old = json.loads(path.read_text()) if path.exists() else {}
        merged = old if "benchmark" not in old else {"before": old}
        merged[label] = results
        results = merged
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")
