"""Benchmark (issue 17): a deeper, nightly-style schemathesis run against a real server.

Protocol. ``recstack serve --workers 2`` on a release (default: a quick ML-100K pop + itemknn release
built into a temp dir; ``--releases-dir`` for another, e.g. the default pipeline), with an API key so
that ``/admin/*`` is exercised too. schemathesis (the ``st`` CLI) runs every check (server errors,
status codes, content types, headers, response schemas, positive data accepted, negative data
refused, Allow headers, use-after-free, ...) in every phase (examples, coverage, fuzzing, stateful)
with ``--max-examples`` cases per operation and phase (default 500; ``make test`` runs 50) and a
fixed ``--seed``. The same run in ``tests/integration/test_api_fuzz.py`` is the CI gate.

Reported: cases generated / passed, failures by code, the run's seconds, and whether the server log
holds a traceback. Writes benchmarks/results/fuzz.json.

    python benchmarks/bench_fuzz.py [--examples 500] [--seed 17] [--releases-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "integration"))

from test_api_fuzz import schemathesis_command, wait_past_midnight  # noqa: E402

from recstack.testing import ServerProcess, build_small_release  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--releases-dir", type=Path, default=None)
    ap.add_argument("--release", default="production")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--st-workers", type=int, default=2, help="concurrent schemathesis workers")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "fuzz.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fuzz-") as tmp:
        root = args.releases_dir
        if root is None:
            root = Path(tmp) / "releases"
            build_small_release(root, ("pop", "itemknn"))
        env = {"RECSTACK_SERVE_API_KEY": "fuzz"}
        # a deep run lasts longer than the safety margin before midnight UTC: wait if it would cross it
        wait_past_midnight(margin=3600.0)
        with ServerProcess(root, release=args.release, workers=args.workers, env=env) as srv:
            t0 = time.perf_counter()
            res = subprocess.run(
                schemathesis_command(srv.url, "fuzz", args.seed, args.examples, args.st_workers),
                cwd=tmp,
                capture_output=True,
                text=True,
            )
            seconds = time.perf_counter() - t0
            log = srv.output(20000)
    out_text = res.stdout + res.stderr
    m = re.search(r"(\d+) generated, (\d+) (?:passed|found)", out_text)
    failures = dict(re.findall(r"❌ (ST\d+ [^:\n]+): (\d+)", out_text))
    summary_block = out_text[out_text.rfind("SUMMARY") :] if "SUMMARY" in out_text else out_text[-3000:]
    out = {
        "benchmark": "fuzz",
        "protocol": __doc__.split("Protocol. ", 1)[1].split("\n\nReported")[0].replace("\n", " "),
        "seed": args.seed,
        "examples_per_operation": args.examples,
        "exit_code": res.returncode,
        "generated": int(m.group(1)) if m else None,
        "passed": int(m.group(2)) if m and "passed" in m.group(0) else None,
        "failures": {k: int(v) for k, v in failures.items()},
        "seconds": round(seconds, 1),
        "server_traceback": "Traceback" in log,
        "summary": summary_block[-3000:],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(summary_block[-2500:])
    print(
        f"generated {out['generated']}, passed {out['passed']}, failures {out['failures']}, "
        f"{out['seconds']} s"
    )


if __name__ == "__main__":
    main()
