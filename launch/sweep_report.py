"""What ``opmask-sweep`` shows besides the status table: ``collect``'s results (results.csv,
results.md, and results.png comparing the points: weak-class mask AP and training-loss curves) and
the in-place refresh of ``status --watch``.

The PNG is drawn with Pillow (matplotlib is not a dependency): left, one bar per point of its
final ``segm_weak`` AP; right, each point's ``total_loss`` against the iteration; the legend
names each point's index and exp-id in its colour.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from typing import Callable

from PIL import Image, ImageDraw

from opmask.run.folder import RunFolder
from opmask.train.events import ITERATION, TOTAL_LOSS
from opmask.utils.fs import atomic_write_bytes

from .executor import LaunchError

COLORS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]
PANEL_W, PANEL_H, MARGIN = 460, 300, 50
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen: the next frame overwrites this one


def collect(manifest: dict, folder: str) -> str:
    """Write results.csv, results.md and results.png of the points' final metrics into
    ``folder``; returns the markdown table."""
    rows = []
    for p in manifest["points"]:
        row = {
            "point": p["index"],
            "exp_id": p["exp_id"],
            **{k: str(v) for k, v in p["overrides"].items()},
        }
        results = final_results(p["run_dir"])
        for task in TASKS:
            ap = results.get(task, {}).get("AP")
            row[f"{task}_AP"] = "-" if ap is None else f"{ap:.2f}"
        rows.append(row)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, restval="")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(os.path.join(folder, "results.csv"), buf.getvalue().encode())
    md = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    md += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    atomic_write_bytes(os.path.join(folder, "results.md"), ("\n".join(md) + "\n").encode())
    png = comparison_png(
        [
            {
                "label": f"{p['index']}: {p['exp_id']}",
                "weak_ap": None if r["segm_weak_AP"] == "-" else float(r["segm_weak_AP"]),
                "curve": loss_curve(p["run_dir"]),
            }
            for p, r in zip(manifest["points"], rows)
        ]
    )
    atomic_write_bytes(os.path.join(folder, "results.png"), png)
    return "\n".join(md)


def varied_keys(spec: dict) -> list[str]:
    """The config keys a sweep varies (its grid's and its points' keys), in file order."""
    keys = list(spec.get("grid") or {})
    for point in spec.get("points") or []:
        keys += list(point)
    return list(dict.fromkeys(keys))


TASKS = ("bbox", "segm", "segm_strong", "segm_weak")


def final_results(run_dir: str) -> dict:
    """The run's ``results.json`` ({} when it has none).

    Raises:
        LaunchError: it is not JSON, or a task's entry is not ``{"AP": number, ...}`` (naming
            the run folder).
    """
    try:
        results = RunFolder(run_dir).read_results()
    except (ValueError, OSError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise LaunchError(f"run folder {run_dir}: its results.json cannot be read ({e})") from None
    if not isinstance(results, dict):
        raise LaunchError(f"run folder {run_dir}: its results.json is not a JSON object")
    for task in TASKS:
        entry = results.get(task, {})
        ap = entry.get("AP") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or not (
            ap is None or (isinstance(ap, (int, float)) and not isinstance(ap, bool))
        ):
            raise LaunchError(
                f"run folder {run_dir}: its results.json has no number as {task} AP ({entry!r})"
            )
    return results


def loss_curve(run_dir: str) -> list[tuple[int, float]]:
    """``(iteration, total_loss)`` of every training record in the run's metrics.json (a record
    without an integer iteration and a finite loss is skipped)."""
    metrics = RunFolder(run_dir).read_metrics()
    return [
        (m[ITERATION], m[TOTAL_LOSS])
        for m in metrics
        if isinstance(m.get(ITERATION), int)
        and isinstance(m.get(TOTAL_LOSS), (int, float))
        and math.isfinite(m[TOTAL_LOSS])
    ]


def comparison_png(points: list[dict]) -> bytes:
    """PNG bytes comparing ``points``: each ``{"label", "weak_ap" (float|None), "curve"}``."""
    legend_h = 16 * len(points) + 10
    img = Image.new("RGB", (2 * PANEL_W + 3 * MARGIN, PANEL_H + 2 * MARGIN + legend_h), "white")
    draw = ImageDraw.Draw(img)
    left = (MARGIN, MARGIN, MARGIN + PANEL_W, MARGIN + PANEL_H)
    right = (2 * MARGIN + PANEL_W, MARGIN, 2 * MARGIN + 2 * PANEL_W, MARGIN + PANEL_H)
    _bars(draw, left, [p["weak_ap"] for p in points])
    _curves(draw, right, [p["curve"] for p in points])
    for i, p in enumerate(points):
        y = 2 * MARGIN + PANEL_H + 16 * i
        draw.rectangle((MARGIN, y + 2, MARGIN + 10, y + 12), fill=COLORS[i % len(COLORS)])
        draw.text((MARGIN + 16, y), p["label"], fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _axes(draw: ImageDraw.ImageDraw, box: tuple, title: str, lo: float, hi: float) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline="black")
    draw.text((x0, y0 - 30), title, fill="black")
    draw.text((x0 - 45, y0 - 6), f"{hi:.3g}", fill="black")
    draw.text((x0 - 45, y1 - 6), f"{lo:.3g}", fill="black")


def _bars(draw: ImageDraw.ImageDraw, box: tuple, values: list[float | None]) -> None:
    """One bar per point (a missing AP: no bar, 'n/a'), from 0 to the largest AP."""
    x0, y0, x1, y1 = box
    hi = max([v for v in values if v is not None] + [1e-9])
    _axes(draw, box, "weak-class mask AP (segm_weak/AP)", 0.0, hi)
    step = (x1 - x0) / max(len(values), 1)
    for i, v in enumerate(values):
        bx = x0 + i * step + step * 0.2
        if v is None:
            draw.text((bx, y1 - 14), "n/a", fill="black")
            continue
        top = y1 - (y1 - y0 - 10) * max(v, 0.0) / hi
        if top < y1 - 1:  # an AP of 0 has no bar, only its value
            draw.rectangle((bx, top, bx + step * 0.6, y1 - 1), fill=COLORS[i % len(COLORS)])
        draw.text((bx, top - 12), f"{v:.2f}", fill="black")


def _curves(draw: ImageDraw.ImageDraw, box: tuple, curves: list[list[tuple[int, float]]]) -> None:
    """Each point's total loss against iteration, on shared axes."""
    x0, y0, x1, y1 = box
    pts = [xy for c in curves for xy in c]
    lo_y, hi_y = (min(y for _, y in pts), max(y for _, y in pts)) if pts else (0.0, 1.0)
    hi_x = max([x for x, _ in pts] + [1])
    _axes(draw, box, "total_loss vs iteration", lo_y, hi_y)
    draw.text((x1 - 40, y1 + 4), str(hi_x), fill="black")
    span = (hi_y - lo_y) or 1.0
    for i, curve in enumerate(curves):
        xy = [
            (x0 + (x1 - x0) * it / hi_x, y1 - 5 - (y1 - y0 - 10) * (v - lo_y) / span)
            for it, v in curve
        ]
        if len(xy) > 1:
            draw.line(xy, fill=COLORS[i % len(COLORS)], width=2)
        elif xy:
            draw.ellipse((xy[0][0] - 2, xy[0][1] - 2, xy[0][0] + 2, xy[0][1] + 2), fill="black")


def watch(render: Callable[[], tuple[str, bool]], interval: float, out=None) -> None:
    """Redraw ``render()``'s text in place every ``interval`` seconds until it says it is
    final (``(text, final)``) or Ctrl-C; on a terminal the screen is cleared between frames."""
    out = out or sys.stdout
    try:
        while True:
            text, final = render()
            out.write((CLEAR if out.isatty() else "") + text + "\n")
            out.flush()
            if final:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
