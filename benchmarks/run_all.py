"""Runs every benchmark in this folder and prints their JSON results as one JSON list.

    python benchmarks/run_all.py [--out FILE]

Each script prints one JSON object (or one per line); ``learn.py`` (training runs of
tens of minutes) and ``meta_grad_compile.py`` (a compile of about 14 minutes) are
skipped. A script that fails is reported with its exit code and the last line of its
stderr, and does not stop the others.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
# Not speed benchmarks but training runs of tens of minutes: run them by themselves.
SKIP = {"learn.py": "PPO learning curves, about 25 minutes",
        "meta_grad_compile.py": "compiles a nested-grad graph, about 14 minutes"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, help="also write the list to this file")
    args = parser.parse_args()
    results, failed = [], 0
    for script in sorted(HERE.glob("*.py")):
        if script.name == pathlib.Path(__file__).name or script.name.startswith("_"):
            continue
        if script.name in SKIP:
            print(f"{script.name}: skipped ({SKIP[script.name]})", file=sys.stderr)
            continue
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        elapsed = round(time.perf_counter() - start, 1)
        if proc.returncode != 0:
            failed += 1
            tail = (proc.stderr.strip().splitlines() or [""])[-1]
            results.append({"script": script.name, "returncode": proc.returncode,
                            "error": tail, "wall_s": elapsed})
            continue
        for line in proc.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a log line that happens to start with "{"
                results.append({"script": script.name, "wall_s": elapsed, **record})
        print(f"{script.name}: {elapsed} s", file=sys.stderr)
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
