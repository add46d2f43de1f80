"""Geometry of the dashboard's SVG charts, computed on the server (no chart library, no CDN).

Each function returns plain numbers and strings that templates/dashboards/_*.svg.html draw; `link` is a
callable that turns drill-down filters into a URL, so every mark on a chart leads to its votes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Link = Callable[..., str]


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    first = math.ceil(lo / step) * step
    ticks = []
    value = first
    while value <= hi + 1e-9 * step:
        ticks.append(round(value, 10))
        value += step
    return ticks


def win_rate_colour(rate: float | None) -> str:
    """Diverging colour: red below 50%, white at 50%, blue above; grey when there are no votes."""
    if rate is None or not math.isfinite(rate):
        return "#e9ecef"
    t = max(-1.0, min(1.0, (rate - 0.5) * 2))
    if t >= 0:  # white -> #2456d6
        r, g, b = (round(255 + (c - 255) * t) for c in (36, 86, 214))
    else:  # white -> #b3261e
        r, g, b = (round(255 + (c - 255) * -t) for c in (179, 38, 30))
    return f"#{r:02x}{g:02x}{b:02x}"


def text_colour(rate: float | None) -> str:
    return "#ffffff" if rate is not None and math.isfinite(rate) and abs(rate - 0.5) > 0.3 else "#1b1f24"


def interval_chart(
    leaderboard: list[dict], link: Link, *, width: int = 640, row_height: int = 26, label_width: int = 170
) -> dict | None:
    """Forest plot of the leaderboard: one row per model, the interval as a bar, the score as a dot."""
    if not leaderboard:
        return None
    finite = [
        v for r in leaderboard for v in (r["lower"], r["upper"], r["score"]) if v is not None and math.isfinite(v)
    ]
    lo, hi = min(finite), max(finite)
    pad = max((hi - lo) * 0.05, 5.0)
    lo, hi = lo - pad, hi + pad
    plot_w = width - label_width - 20
    top = 10

    def x(v: float) -> float:
        v = min(max(v, lo), hi)
        return round(label_width + (v - lo) / (hi - lo) * plot_w, 2)

    rows = []
    for i, r in enumerate(leaderboard):
        y = top + i * row_height + row_height / 2
        rows.append(
            {
                "model": r["model"],
                "y": y,
                "text_y": y + 4,
                "x_lower": x(r["lower"]),
                "x_upper": x(r["upper"]),
                "x_score": x(r["score"]),
                "score": r["score"],
                "lower": r["lower"],
                "upper": r["upper"],
                "rank": r["rank"],
                "href": link(model=r["model"]),
            }
        )
    axis_y = top + len(leaderboard) * row_height + 6
    ticks = [{"x": x(t), "label": f"{t:g}", "label_y": axis_y + 16} for t in nice_ticks(lo, hi)]
    return {
        "width": width,
        "height": axis_y + 24,
        "rows": rows,
        "ticks": ticks,
        "axis_y": axis_y,
        "label_x": label_width - 8,
        "plot_left": label_width,
        "plot_right": label_width + plot_w,
        "mean_x": x(1000.0) if lo <= 1000.0 <= hi else None,
        "top": top,
    }


def heatmap(win_rates: dict | None, link: Link, *, cell: int = 56, label_width: int = 150) -> dict | None:
    """Win-rate matrix: row model's share of its votes against the column model (ties half)."""
    if not win_rates:
        return None
    models = win_rates["models"]
    k = len(models)
    header = 110
    cells = []
    for i, row_model in enumerate(models):
        for j, col_model in enumerate(models):
            if i == j:
                continue
            rate, n = win_rates["rates"][i][j], win_rates["counts"][i][j]
            cells.append(
                {
                    "x": label_width + j * cell,
                    "y": header + i * cell,
                    "fill": win_rate_colour(rate),
                    "text": "–" if rate is None else f"{100 * rate:.0f}%",
                    "n": n,
                    "rate": rate,
                    "text_colour": text_colour(rate),
                    "cx": label_width + j * cell + cell / 2,
                    "cy": header + i * cell + cell / 2,
                    "row": row_model,
                    "col": col_model,
                    "href": link(model=row_model, opponent=col_model) if n else None,
                }
            )
    return {
        # the slanted column labels need room on the right
        "width": label_width + k * cell + 110,
        "height": header + k * cell + 10,
        "cell": cell,
        "cells": cells,
        "row_labels": [
            {"x": label_width - 8, "y": header + i * cell + cell / 2 + 4, "text": m} for i, m in enumerate(models)
        ],
        "col_labels": [
            {"x": label_width + j * cell + cell / 2, "y": header - 8, "text": m} for j, m in enumerate(models)
        ],
        "diagonal": [{"x": label_width + i * cell, "y": header + i * cell} for i in range(k)],
    }


CRITERION_COLOURS = {"prompt_following": "#2456d6", "aesthetics": "#e08a00", "typography": "#1e7b34"}


def grouped_bars(
    sd3: dict | None, criteria: list[dict], link: Link, *, height: int = 280, group_width: int = 120
) -> dict | None:
    """The SD3 paper's figure: one model's win rate against each opponent, one bar per criterion,
    Wilson intervals as whiskers and a dashed line at 50%."""
    if not sd3 or not sd3["rows"]:
        return None
    order = [c["criterion"] for c in criteria]
    present = [c for c in order if any(r["criterion"] == c for r in sd3["rows"])]
    opponents = list(dict.fromkeys(r["opponent"] for r in sd3["rows"]))
    left, top, plot_h = 50, 20, height - 90
    bar_w = (group_width - 30) / max(len(present), 1)
    width = max(left + group_width * len(opponents) + 20, left + 160 * len(present) + 20)  # room for the legend

    def y(rate: float) -> float:
        return round(top + (1 - rate) * plot_h, 2)

    bars = []
    for g, opponent in enumerate(opponents):
        for b, criterion in enumerate(present):
            row = next((r for r in sd3["rows"] if r["criterion"] == criterion and r["opponent"] == opponent), None)
            if row is None:
                continue
            x0 = left + g * group_width + 15 + b * bar_w
            bars.append(
                {
                    "x": round(x0, 2),
                    "w": round(bar_w - 3, 2),
                    "y": y(row["win_rate"]),
                    "h": round(plot_h - (y(row["win_rate"]) - top), 2),
                    "colour": CRITERION_COLOURS.get(criterion, "#666"),
                    "whisker_x": round(x0 + (bar_w - 3) / 2, 2),
                    "y_lower": y(row["lower"]),
                    "y_upper": y(row["upper"]),
                    "criterion": criterion,
                    "opponent": opponent,
                    "rate": row["win_rate"],
                    "n": row["n"],
                    "href": link(model=sd3["model"], opponent=opponent, criterion=criterion),
                }
            )
    groups = [
        {"x": left + g * group_width + group_width / 2, "y": top + plot_h + 18, "text": o}
        for g, o in enumerate(opponents)
    ]
    ticks = [{"y": y(t), "label": f"{100 * t:.0f}%", "label_x": left - 6} for t in (0, 0.25, 0.5, 0.75, 1.0)]
    legend = [
        {
            "x": left + i * 160,
            "y": height - 22,
            "text_x": left + i * 160 + 18,
            "text_y": height - 12,
            "colour": CRITERION_COLOURS.get(c, "#666"),
            "text": next((x["label"] for x in criteria if x["criterion"] == c), c),
        }
        for i, c in enumerate(present)
    ]
    return {
        "width": width,
        "height": height,
        "bars": bars,
        "groups": groups,
        "ticks": ticks,
        "legend": legend,
        "left": left,
        "right": width - 10,
        "y_half": y(0.5),
        "model": sd3["model"],
        "top": top,
        "bottom": top + plot_h,
    }


SERIES_COLOURS = ("#2456d6", "#e08a00", "#1e7b34", "#b3261e", "#6a3fb5", "#00838f", "#8d6e63", "#c2185b")


def history_chart(points: list[dict], *, width: int = 720, height: int = 300) -> dict | None:
    """Scores over time: one line per model through its snapshots' scores, its interval as a shaded band.

    points: evalsite.dashboards.snapshots.history rows (taken_at, model, score, lower, upper)."""
    usable = [p for p in points if p["score"] is not None and p["lower"] is not None and p["upper"] is not None]
    times = sorted({p["taken_at"] for p in usable})
    if len(times) < 1:
        return None
    left, right, top, bottom = 60, width - 150, 12, height - 40
    lo = min(p["lower"] for p in usable)
    hi = max(p["upper"] for p in usable)
    pad = max((hi - lo) * 0.05, 5.0)
    lo, hi = lo - pad, hi + pad
    t0, t1 = times[0].timestamp(), times[-1].timestamp()

    def x(when) -> float:
        if t1 == t0:
            return round((left + right) / 2, 2)
        return round(left + (when.timestamp() - t0) / (t1 - t0) * (right - left), 2)

    def y(v: float) -> float:
        return round(bottom - (v - lo) / (hi - lo) * (bottom - top), 2)

    models = list(dict.fromkeys(p["model"] for p in sorted(usable, key=lambda p: (p["taken_at"], p["rank"]))))
    series = []
    for i, model in enumerate(models):
        mine = sorted((p for p in usable if p["model"] == model), key=lambda p: p["taken_at"])
        upper = [f"{x(p['taken_at'])},{y(p['upper'])}" for p in mine]
        lower = [f"{x(p['taken_at'])},{y(p['lower'])}" for p in reversed(mine)]
        last = mine[-1]
        series.append(
            {
                "model": model,
                "colour": SERIES_COLOURS[i % len(SERIES_COLOURS)],
                "line": " ".join(f"{x(p['taken_at'])},{y(p['score'])}" for p in mine),
                "band": " ".join(upper + lower),
                "dots": [
                    {
                        "x": x(p["taken_at"]),
                        "y": y(p["score"]),
                        "score": p["score"],
                        "lower": p["lower"],
                        "upper": p["upper"],
                        "when": p["taken_at"],
                    }
                    for p in mine
                ],
                "label_x": right + 8,
                "label_y": y(last["score"]) + 4,
            }
        )
    ticks = [{"y": y(t), "label": f"{t:g}", "label_x": left - 6} for t in nice_ticks(lo, hi)]
    shown = times if len(times) <= 6 else [times[round(i * (len(times) - 1) / 5)] for i in range(6)]
    time_ticks = [{"x": x(t), "label": t.strftime("%m-%d %H:%M"), "y": bottom + 16} for t in shown]
    return {
        "width": width,
        "height": height,
        "series": series,
        "ticks": ticks,
        "time_ticks": time_ticks,
        "left": left,
        "right": right,
        "top": top,
        "bottom": bottom,
        "mean_y": y(1000.0) if lo <= 1000.0 <= hi else None,
    }
