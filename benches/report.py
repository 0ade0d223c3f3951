#!/usr/bin/env python3
"""Summarises criterion's results as BENCHMARKS.md tables and an SVG chart.

Reads target/criterion/<group>/<backend>/<bench>/new/estimates.json (criterion's own
output after `cargo bench`), prints Markdown tables of rodario against the raw baseline,
and writes benches/rodario-vs-raw.svg. Standard library only.

    cargo bench --all-features && python3 benches/report.py
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRITERION = ROOT / "target" / "criterion"
SVG = ROOT / "benches" / "rodario-vs-raw.svg"
BACKENDS = ["memory", "memory_mt", "redis", "redis_cluster", "nats", "nats_cluster"]
IN_FLIGHT = 64


def mean_ns(group, backend, bench):
    path = CRITERION / group / backend / bench / "new" / "estimates.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["mean"]["point_estimate"]


def human(ns):
    if ns is None:
        return "–"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def rate(ns):
    return None if ns is None else IN_FLIGHT / (ns / 1e9)


def human_rate(per_s):
    if per_s is None:
        return "–"
    return f"{per_s / 1e3:.0f}k/s" if per_s < 1e6 else f"{per_s / 1e6:.2f}M/s"


def ratio(a, b):
    return None if a is None or b is None else a / b


def fmt_ratio(r):
    return "–" if r is None else f"{r:.2f}×"


def main():
    if not CRITERION.exists():
        sys.exit("no target/criterion: run `cargo bench --all-features` first")
    rows = []  # (label, ratio) for the chart: rodario time / raw time, lower is better
    print("| group | backend | raw | rodario | rodario / raw |")
    print("|---|---|---|---|---|")
    for group in ["call_sequential", "call_sequential_64k", "lock"]:
        for backend in BACKENDS:
            raw = mean_ns(group, backend, "raw")
            ours = mean_ns(group, backend, "rodario")
            if raw is None and ours is None:
                continue
            r = ratio(ours, raw)
            rows.append((f"{group} {backend}", r))
            print(f"| {group} | {backend} | {human(raw)} | {human(ours)} | {fmt_ratio(r)} |")
    print()
    print("| group | backend | raw calls/s | rodario calls/s | rodario / raw |")
    print("|---|---|---|---|---|")
    for backend in BACKENDS:
        raw = rate(mean_ns("call_inflight64", backend, "raw"))
        ours = rate(mean_ns("call_inflight64", backend, "rodario"))
        if raw is None and ours is None:
            continue
        r = ratio(ours, raw)
        # Drawn as time per call (raw rate / ours) so that every bar reads "lower is better".
        rows.append((f"call_inflight64 {backend}", None if r is None else 1 / r))
        print(f"| call_inflight64 | {backend} | {human_rate(raw)} | {human_rate(ours)} | {fmt_ratio(r)} |")
    print()
    print("| backend | 1 member | 4 members | 16 members | 16 / 1 |")
    print("|---|---|---|---|---|")
    for backend in BACKENDS:
        times = [mean_ns("cluster_gather", backend, str(n)) for n in (1, 4, 16)]
        if all(t is None for t in times):
            continue
        r = ratio(times[2], times[0])
        print(f"| {backend} | {' | '.join(human(t) for t in times)} | {fmt_ratio(r)} |")
    write_svg([(label, r) for label, r in rows if r is not None])
    print(f"\nchart: {SVG.relative_to(ROOT)}", file=sys.stderr)


def write_svg(rows):
    width, bar_h, gap, left, top = 760, 18, 6, 250, 40
    scale_max = max(4.0, max(r for _, r in rows) * 1.1)
    plot_w = width - left - 60
    height = top + len(rows) * (bar_h + gap) + 40
    x = lambda r: left + plot_w * r / scale_max
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-size="14">rodario time / raw-client time '
        f'(lower is better; 1 = the raw floor)</text>',
    ]
    for tick in range(0, int(scale_max) + 1):
        tx = x(tick)
        out.append(f'<line x1="{tx:.1f}" y1="{top - 8}" x2="{tx:.1f}" y2="{height - 30}" '
                   f'stroke="{"#444" if tick == 1 else "#ddd"}"/>')
        out.append(f'<text x="{tx:.1f}" y="{height - 14}" text-anchor="middle">{tick}×</text>')
    for i, (label, r) in enumerate(rows):
        y = top + i * (bar_h + gap)
        colour = "#3b7dd8" if r <= 1.2 else ("#e0a030" if r <= 3 else "#d04040")
        out.append(f'<text x="{left - 8}" y="{y + bar_h - 5}" text-anchor="end">{label}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{x(r) - left:.1f}" height="{bar_h}" fill="{colour}"/>')
        out.append(f'<text x="{x(r) + 4:.1f}" y="{y + bar_h - 5}">{r:.2f}×</text>')
    out.append("</svg>")
    SVG.write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
