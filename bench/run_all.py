"""Run every benchmark (``bench/*_bench.py``) one after another; each writes its
results as JSON to ``bench/results/<name>.json``. Exits non-zero if any fails."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def main() -> int:
    failed = []
    for script in sorted(BENCH_DIR.glob("*_bench.py")):
        print(f"== {script.stem}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(script)], cwd=BENCH_DIR.parent)
        print(f"== {script.stem}: exit {code} after {time.monotonic() - started:.0f}s", flush=True)
        if code:
            failed.append(script.stem)
    results = sorted(p.name for p in (BENCH_DIR / "results").glob("*.json"))
    print(f"results: {', '.join(results) or 'none'} in bench/results/")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
