#!/usr/bin/env python3
"""Tables and a chart of how a call's cost grows, from `benches/growth.rs`'s output.

Reads target/growth/<backend>/<series>.csv (written by
`cargo bench --all-features --bench growth`), prints BENCHMARKS.md's Markdown tables and
writes benches/growth.svg: calls/s against calls in flight, payload size and actors served,
and the latency percentiles of sequential calls, idle and under load. Standard library only.

    cargo bench --all-features --bench growth && python3 benches/growth.py
"""
import csv
import math
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
GROWTH = ROOT / "target" / "growth"
SVG = ROOT / "benches" / "growth.svg"
BACKENDS = ["memory", "redis", "nats"]
COLOURS = {"memory": "#3b7dd8", "redis": "#d04040", "nats": "#30a060"}
# (series, column of x, x label, title)
RATE_SERIES = [
    ("in_flight", "in_flight", "calls in flight", "calls/s against calls in flight"),
    ("payload", "payload_bytes", "argument size", "sequential calls/s against argument size"),
    ("actors", "actors", "actors on the host node", "calls/s, 64 in flight over n actors"),
]
PERCENTILES = [("p50_ns", "p50"), ("p99_ns", "p99"), ("p99_9_ns", "p99.9")]


def read(backend, series):
    path = GROWTH / backend / f"{series}.csv"
    if not path.exists():
        return None
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def human_rate(per_s):
    return f"{per_s / 1e3:.1f}k" if per_s < 1e6 else f"{per_s / 1e6:.2f}M"


def human_bytes(n):
    return f"{n // 1024} KiB" if n >= 1024 else f"{n} B"


def human_us(ns):
    us = ns / 1e3
    return f"{us:.0f} µs" if us >= 100 else f"{us:.1f} µs"


def tables(data):
    for series, column, label, title in RATE_SERIES:
        present = [b for b in BACKENDS if data[b].get(series)]
        if not present:
            continue
        print(f"{title} (calls/s):\n")
        print(f"| {label} | " + " | ".join(present) + " |")
        print("|---|" + "---|" * len(present))
        xs = [int(row[column]) for row in data[present[0]][series]]
        for i, x in enumerate(xs):
            shown = human_bytes(x) if series == "payload" else str(x)
            cells = [human_rate(float(data[b][series][i]["calls_per_s"])) for b in present]
            print(f"| {shown} | " + " | ".join(cells) + " |")
        print()
    present = [b for b in BACKENDS if data[b].get("latency")]
    if present:
        print("Latency of sequential calls:\n")
        print("| backend | background load | p50 | p99 | p99.9 | max | calls |")
        print("|---|---|---|---|---|---|---|")
        for b in present:
            for row in data[b]["latency"]:
                load = "none" if row["load"] == "idle" else f"{float(row['load_calls_per_s']) / 1e3:.1f}k calls/s"
                cells = [human_us(int(row[c])) for c, _ in PERCENTILES] + [human_us(int(row["max_ns"]))]
                print(f"| {b} | {load} | " + " | ".join(cells) + f" | {row['calls']} |")
        print()


def log_ticks(lo, hi):
    """Powers of ten spanning [lo, hi], and the axis' bounds."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if a == b:
        b += 1
    return [10**e for e in range(a, b + 1)], 10**a, 10**b


def panel(out, x0, y0, w, h, title, xlabel, xs, xlabels, lines, ylabel):
    """A line chart with a log y axis. `xs` are the x values (placed on a log scale),
    `lines` (name, colour, dashed, [(x, y)])."""
    left, bottom = 56, 40
    pw, ph = w - left - 34, h - bottom - 30
    ys = [y for _, _, _, points in lines for _, y in points if y > 0]
    ticks, ylo, yhi = log_ticks(min(ys), max(ys))
    lx0, lx1 = math.log(min(xs)), math.log(max(xs))
    px = lambda x: x0 + left + pw * ((math.log(x) - lx0) / (lx1 - lx0) if lx1 > lx0 else 0.5)
    py = lambda y: y0 + 30 + ph * (1 - (math.log10(y) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo)))
    out.append(f'<text x="{x0 + left}" y="{y0 + 18}" font-size="13">{title}</text>')
    for t in ticks:
        ty = py(t)
        out.append(f'<line x1="{x0 + left}" y1="{ty:.1f}" x2="{x0 + left + pw}" y2="{ty:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 + left - 4}" y="{ty + 4:.1f}" text-anchor="end">{ylabel(t)}</text>')
    for x, label in zip(xs, xlabels):
        tx = px(x)
        out.append(f'<line x1="{tx:.1f}" y1="{y0 + 30}" x2="{tx:.1f}" y2="{y0 + 30 + ph}" stroke="#eee"/>')
        out.append(f'<text x="{tx:.1f}" y="{y0 + 30 + ph + 14}" text-anchor="middle">{label}</text>')
    out.append(f'<text x="{x0 + left + pw / 2}" y="{y0 + h - 4}" text-anchor="middle">{xlabel}</text>')
    for _, colour, dashed, points in lines:
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points if y > 0)
        dash = ' stroke-dasharray="5,4"' if dashed else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for x, y in points:
            if y > 0:
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')


def rate_label(v):
    return f"{v / 1e6:g}M" if v >= 1e6 else (f"{v / 1e3:g}k" if v >= 1e3 else f"{v:g}")


def us_label(ns):
    return f"{ns / 1e6:g} ms" if ns >= 1e6 else f"{ns / 1e3:g} µs"


def write_svg(data):
    w, h = 440, 290
    out = []
    for i, (series, column, label, title) in enumerate(RATE_SERIES):
        present = [b for b in BACKENDS if data[b].get(series)]
        if not present:
            continue
        xs = [int(row[column]) for row in data[present[0]][series]]
        xlabels = [human_bytes(x) for x in xs] if series == "payload" else [str(x) for x in xs]
        lines = [
            (b, COLOURS[b], False, [(int(r[column]), float(r["calls_per_s"])) for r in data[b][series]])
            for b in present
        ]
        panel(out, (i % 2) * w, (i // 2) * h + 30, w, h, title, label, xs, xlabels, lines, rate_label)
    present = [b for b in BACKENDS if data[b].get("latency")]
    if present:
        # Percentiles on a log scale of "1 / (1 - q)": p50, p99, p99.9 evenly apart from p99.
        xs = [2, 100, 1000]
        lines = []
        for b in present:
            for row in data[b]["latency"]:
                points = [(x, int(row[c])) for x, (c, _) in zip(xs, PERCENTILES)]
                lines.append((b, COLOURS[b], row["load"] == "idle", points))
        panel(out, w, h + 30, w, h, "latency of sequential calls (dashed: idle)", "percentile",
              xs, [p for _, p in PERCENTILES], lines, us_label)
    legend = " ".join(
        f'<rect x="{20 + 110 * i}" y="10" width="14" height="4" fill="{COLOURS[b]}"/>'
        f'<text x="{38 + 110 * i}" y="16">{b}</text>'
        for i, b in enumerate(BACKENDS)
    )
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w}" height="{2 * h + 30}" '
        f'font-family="sans-serif" font-size="11">\n<rect width="{2 * w}" height="{2 * h + 30}" fill="white"/>'
    )
    SVG.write_text("\n".join([head, legend, *out, "</svg>"]) + "\n")


def main():
    if not GROWTH.exists():
        sys.exit("no target/growth: run `cargo bench --all-features --bench growth` first")
    data = {b: {s: read(b, s) for s in ["in_flight", "payload", "actors", "latency"]} for b in BACKENDS}
    tables(data)
    write_svg(data)
    print(f"chart: {SVG.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
