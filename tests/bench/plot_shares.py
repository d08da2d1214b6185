#!/usr/bin/env python3
"""Render the scheduler benchmark's share-over-time CSV as an SVG line chart.

    plot_shares.py <timeline.csv> <out.svg> [--title TEXT]

The CSV (written by `vgpu-rig-tests bench`) has a header and rows
    t_ms,instance,weight,share_pct
where share_pct is the instance's share of engine time in the sampling interval
ending at t_ms, computed from the kernel's busy_ns counters. Vertical markers are
drawn where an instance's configured weight changes. Standard library only.
"""
import csv
import sys
from collections import defaultdict

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
          "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def load(path):
    series = defaultdict(list)
    with open(path, newline="") as f:
        rows = csv.DictReader(f)
        need = {"t_ms", "instance", "weight", "share_pct"}
        if rows.fieldnames is None or not need <= set(rows.fieldnames):
            sys.exit(f"{path}: header must contain {sorted(need)}")
        for n, row in enumerate(rows, start=2):
            try:
                series[row["instance"]].append(
                    (float(row["t_ms"]), int(row["weight"]), float(row["share_pct"])))
            except ValueError as e:
                sys.exit(f"{path}:{n}: {e}")
    if not series:
        sys.exit(f"{path}: no data rows")
    return series


def render(series, title):
    w, h, ml, mr, mt, mb = 900, 420, 60, 170, 40, 50
    pw, ph = w - ml - mr, h - mt - mb
    tmax = max(t for pts in series.values() for t, _, _ in pts) or 1.0
    x = lambda t: ml + pw * t / tmax
    y = lambda s: mt + ph * (1 - s / 100.0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{ml}" y="22" font-size="15">{title}</text>']
    for s in range(0, 101, 20):
        out.append(f'<line x1="{ml}" y1="{y(s):.1f}" x2="{ml + pw}" y2="{y(s):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{ml - 8}" y="{y(s) + 4:.1f}" text-anchor="end">{s}%</text>')
    for i in range(0, 6):
        t = tmax * i / 5
        out.append(f'<text x="{x(t):.1f}" y="{mt + ph + 18}" text-anchor="middle">{t / 1000:.1f}s</text>')
    out.append(f'<text x="{ml + pw / 2}" y="{h - 8}" text-anchor="middle">time (guest wall clock)</text>')
    out.append(f'<text transform="translate(16,{mt + ph / 2}) rotate(-90)" text-anchor="middle">'
               'share of engine time (kernel busy_ns)</text>')
    for (name, pts), color in zip(sorted(series.items()), COLORS * 10):
        for (t0, w0, _), (t1, w1, _) in zip(pts, pts[1:]):
            if w0 != w1:
                out.append(f'<line x1="{x(t1):.1f}" y1="{mt}" x2="{x(t1):.1f}" y2="{mt + ph}" '
                           f'stroke="{color}" stroke-dasharray="4 3"/>')
                out.append(f'<text x="{x(t1) + 3:.1f}" y="{mt + 12}" fill="{color}">'
                           f'{name}: weight {w0}→{w1}</text>')
        path = " ".join(f"{x(t):.1f},{y(s):.1f}" for t, _, s in pts)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
    for i, (name, pts) in enumerate(sorted(series.items())):
        color = COLORS[i % len(COLORS)]
        ly = mt + 10 + 18 * i
        out.append(f'<rect x="{ml + pw + 15}" y="{ly - 9}" width="12" height="12" fill="{color}"/>')
        out.append(f'<text x="{ml + pw + 32}" y="{ly + 1}">{name} (w {pts[0][1]}→{pts[-1][1]})</text>')
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    title = "vgpu: share of engine time per instance through a live weight change"
    if len(argv) >= 5 and argv[3] == "--title":
        title = argv[4]
    svg = render(load(argv[1]), title)
    with open(argv[2], "w") as f:
        f.write(svg)


if __name__ == "__main__":
    main(sys.argv)
