#!/usr/bin/env python3
"""Runs the criterion benches three times and prints the median of every ratio.

Ratios move by ±30 % between runs on a small shared machine, so one run proves little.
This runs `cargo bench --all-features` three times, keeps each run's criterion estimates
(target/criterion/<group>/<backend>/<bench>/new/estimates.json, the files benches/report.py
reads), and prints, for each ratio rodario / raw, the three values, their median and their
spread (min–max). Standard library only.

    python3 benches/median.py                          # three full runs, about 13 minutes
    python3 benches/median.py -- --quick               # arguments after `--` go to the benches
    python3 benches/median.py --bench redis -- --quick call_sequential
    python3 benches/median.py --runs 5                 # another number of runs
    python3 benches/median.py --saved                  # the table again, from the last runs

Arguments before `--` that the script does not know go to `cargo bench`. Each run's figures
are kept in target/median/run-<n>.json.

Ratios, all "rodario against the floor":
- time ratios (rodario time / raw time, lower is better) for benches timed per call;
- rate ratios (rodario calls/s / raw calls/s, higher is better) for benches that declare a
  throughput in elements (`call_inflight64`, ...): the issue's targets are written that way;
- `cluster_gather/<backend>` 16 members / 1 member, and 1 member / one sequential call.
"""
import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRITERION = ROOT / "target" / "criterion"
SAVED = ROOT / "target" / "median"


def collect(since):
    """Every benchmark whose estimates were written at or after `since` (a run's start):
    {"group/backend/bench": {"mean_ns": float, "elements": int or None}}."""
    found = {}
    for estimates in CRITERION.glob("**/new/estimates.json"):
        if estimates.stat().st_mtime < since:
            continue  # left by an earlier run, maybe of a bench that no longer exists
        bench_dir = estimates.parent.parent
        key = bench_dir.relative_to(CRITERION).as_posix()
        mean = json.loads(estimates.read_text())["mean"]["point_estimate"]
        elements = None
        benchmark = estimates.parent / "benchmark.json"
        if benchmark.exists():
            throughput = json.loads(benchmark.read_text()).get("throughput") or {}
            elements = throughput.get("Elements")
        found[key] = {"mean_ns": mean, "elements": elements}
    return found


def ratios(run):
    """{label: (value, "time" | "rate")} for one run's figures."""
    out = {}
    for key, ours in sorted(run.items()):
        parts = key.split("/")
        if len(parts) != 3 or parts[2] != "rodario":
            continue
        raw = run.get(f"{parts[0]}/{parts[1]}/raw")
        if raw is None:
            continue
        if ours["elements"]:
            # Both sides do the same number of calls per iteration: the rate ratio is the
            # inverse of the time ratio.
            out[f"{parts[0]}/{parts[1]} (calls/s)"] = (raw["mean_ns"] / ours["mean_ns"], "rate")
        else:
            out[f"{parts[0]}/{parts[1]}"] = (ours["mean_ns"] / raw["mean_ns"], "time")
    backends = {key.split("/")[1] for key in run if key.startswith("cluster_gather/")}
    for backend in sorted(backends):
        one = run.get(f"cluster_gather/{backend}/1")
        sixteen = run.get(f"cluster_gather/{backend}/16")
        call = run.get(f"call_sequential/{backend}/rodario")
        if one and sixteen:
            out[f"cluster_gather/{backend} 16 / 1"] = (sixteen["mean_ns"] / one["mean_ns"], "time")
        if one and call:
            out[f"cluster_gather/{backend}/1 / call_sequential"] = (
                one["mean_ns"] / call["mean_ns"],
                "time",
            )
    return out


def run_benches(cargo_args, bench_args, runs):
    SAVED.mkdir(parents=True, exist_ok=True)
    for old in SAVED.glob("run-*.json"):
        old.unlink()
    for n in range(1, runs + 1):
        # --no-fail-fast: a bench binary that fails (a server fixture that would not start on
        # a loaded machine) does not cost the other benches' figures.
        command = ["cargo", "bench", "--all-features", "--no-fail-fast", *cargo_args]
        if bench_args:
            command += ["--", *bench_args]
        print(f"median.py: run {n} of {runs}: {' '.join(command)}", file=sys.stderr, flush=True)
        # A second of slack: some file systems keep modification times in whole seconds.
        since = time.time() - 1
        # The benches' own report goes to stderr, so that stdout holds only the table.
        status = subprocess.run(command, cwd=ROOT, stdout=sys.stderr).returncode
        figures = collect(since)
        if not figures:
            sys.exit(f"median.py: run {n} wrote no criterion estimates (cargo exited with {status})")
        if status != 0:
            print(
                f"median.py: run {n}: cargo exited with {status}; keeping the figures of the "
                "benches that finished (the table says how many runs each ratio has)",
                file=sys.stderr,
            )
        (SAVED / f"run-{n}.json").write_text(json.dumps(figures, indent=1, sort_keys=True))


def load_saved():
    files = sorted(SAVED.glob("run-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    if not files:
        sys.exit("median.py: no saved runs in target/median: run without --saved first")
    return [json.loads(p.read_text()) for p in files]


def print_table(runs):
    per_run = [ratios(run) for run in runs]
    labels = sorted({label for r in per_run for label in r})
    header = " | ".join(f"run {n}" for n in range(1, len(runs) + 1))
    print(f"| ratio | better | {header} | median | spread (min–max) |")
    print("|---|---|" + "---|" * len(runs) + "---|---|")
    summary = {}
    for label in labels:
        values = [r.get(label) for r in per_run]
        present = [v[0] for v in values if v is not None]
        kind = next(v[1] for v in values if v is not None)
        median = statistics.median(present)
        summary[label] = {"runs": present, "median": median, "min": min(present), "max": max(present)}
        cells = " | ".join("–" if v is None else f"{v[0]:.2f}" for v in values)
        better = "lower" if kind == "time" else "higher"
        missing = "" if len(present) == len(runs) else f" ({len(present)} runs)"
        print(
            f"| {label} | {better} | {cells} | **{median:.2f}×**{missing} | "
            f"{min(present):.2f}–{max(present):.2f} |"
        )
    (SAVED / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))


def main():
    argv = sys.argv[1:]
    bench_args = []
    if "--" in argv:
        split = argv.index("--")
        argv, bench_args = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(
        description="Medians over several `cargo bench --all-features` runs.",
        epilog="Unknown arguments go to `cargo bench`; those after `--` to the benches.",
    )
    parser.add_argument("--runs", type=int, default=3, help="how many runs (default 3)")
    parser.add_argument("--saved", action="store_true", help="reprint the last runs' table")
    args, cargo_args = parser.parse_known_args(argv)
    if args.runs < 1:
        sys.exit("median.py: --runs must be at least 1")
    if not args.saved:
        run_benches(cargo_args, bench_args, args.runs)
    print_table(load_saved())


if __name__ == "__main__":
    main()
