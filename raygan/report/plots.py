"""The report's pictures: one function per figure (matplotlib's object API: no pyplot, so no global state
or GUI backend) and the progress GIF, each written to the path it is given."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from raygan.images import save_gif
from raygan.report.loading import Experiment, RunHistory, best_evaluation, health_events, read_grid
from raygan.tune.summary import finite, is_number, search_progress

LOSS_LABELS = {"g_loss": "G loss", "d_loss": "D loss", "critic_loss": "critic loss"}
FIGURE_SIZE = (8, 4.5)  # inches, at 100 dpi: 800 x 450 pixels
GIF_MIN_WIDTH = 320  # small grids are scaled up (whole pixels) so that the caption stays readable
GIF_FRAME_MS, GIF_LAST_FRAME_MS = 600, 2000


def _figure():
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZE)
    return figure, figure.subplots()


def _save(figure, path: Path) -> Path:
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _placeholder(ax, title: str, message: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def _spans_decades(values: list[float]) -> bool:
    """Worth a log axis: all positive and more than a factor 10 apart."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 10


def _log_fid_axis(ax) -> None:
    """A log FID axis labelled ..., 10, 20, 50, 100, 200, ... in plain numbers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[key]) for r in records if finite(r.get(key))]
    return [p[0] for p in points], [p[1] for p in points]


def loss_keys(records: list[dict]) -> list[str]:
    """Every recorded `*_loss`: G, D and critic first, then any other in name order."""
    present = {k for r in records for k in r if k.endswith("_loss")}
    return [k for k in LOSS_LABELS if k in present] + sorted(present - set(LOSS_LABELS))


def plot_losses(history: RunHistory, path: Path) -> Path:
    figure, ax = _figure()
    keys = loss_keys(history.records)
    if not keys:
        _placeholder(ax, f"{history.name}: losses", "no losses recorded")
        return _save(figure, path)
    for key in keys:
        ax.plot(*_series(history.records, key), label=LOSS_LABELS.get(key, key))
    ax.set(title=f"{history.name}: losses", xlabel="training step", ylabel="loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(figure, path)


def _draw_health_events(ax, events: list[dict]) -> None:
    """A dotted red line per event, its condition written up from the line's foot."""
    for event in events:
        ax.axvline(event["step"], color="tab:red", linestyle=":", alpha=0.7)
        ax.text(
            event["step"],
            0.02,
            f"{event.get('condition')} ",
            transform=ax.get_xaxis_transform(),
            rotation=90,
            va="bottom",
            ha="right",
            fontsize=8,
            color="tab:red",
        )


def plot_fid(history: RunHistory, path: Path) -> Path:
    """FID (left axis) and KID (right axis) over steps, the best FID starred, health events as lines."""
    figure, ax = _figure()
    title = f"{history.name}: FID and KID"
    steps, fids = _series(history.evaluations, "fid")
    if not steps:
        _placeholder(ax, title, "no evaluations yet")
        return _save(figure, path)
    lines = ax.plot(steps, fids, "o-", color="tab:blue", label="FID")
    if _spans_decades(fids):
        _log_fid_axis(ax)
    kid_steps, kids = _series(history.evaluations, "kid")
    if kid_steps:
        kid_ax = ax.twinx()
        lines += kid_ax.plot(kid_steps, kids, "s--", color="tab:orange", label="KID")
        kid_ax.set_ylabel("KID (lower is better)")
        ax.set_zorder(kid_ax.get_zorder() + 1)  # FID, the star and the events in front of KID
        ax.patch.set_visible(False)
    best = best_evaluation(history)
    lines += ax.plot(
        [best["step"]],
        [best["fid"]],
        "*",
        color="gold",
        markeredgecolor="black",
        markersize=16,
        label=f"best FID {best['fid']:.4g} at step {best['step']}",
        zorder=5,
    )
    ax.annotate(
        f"best {best['fid']:.4g}\nstep {best['step']}",
        (best["step"], best["fid"]),
        textcoords="offset points",
        xytext=(-12, 10),
        ha="right",
        fontsize=9,
    )
    _draw_health_events(ax, health_events(history))
    ax.set(title=title, xlabel="training step", ylabel="FID (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(lines, [line.get_label() for line in lines], loc="best")
    return _save(figure, path)


def has_modes(history: RunHistory) -> bool:
    return any(finite(r.get("modes_total")) and r["modes_total"] > 0 for r in history.evaluations)


def plot_modes(history: RunHistory, path: Path) -> Path:
    """Classes covered (left axis) and KL of the sampled class mix from the real one (right axis)."""
    figure, ax = _figure()
    steps, covered = _series(history.evaluations, "modes_covered")
    total = max(r["modes_total"] for r in history.evaluations if finite(r.get("modes_total")))
    lines = ax.plot(steps, covered, "o-", color="tab:green", label="modes covered")
    ax.axhline(total, color="tab:green", linestyle="--", alpha=0.5)
    ax.set_ylim(0, total * 1.05)
    ax.set(
        title=f"{history.name}: mode coverage ({total:g} modes)",
        xlabel="training step",
        ylabel=f"modes covered (of {total:g})",
    )
    kl_steps, kls = _series(history.evaluations, "mode_kl")
    if kl_steps:
        kl_ax = ax.twinx()
        lines += kl_ax.plot(kl_steps, kls, "s--", color="tab:purple", label="KL(sampled || real modes)")
        kl_ax.set_ylabel("KL divergence (nats, lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(lines, [line.get_label() for line in lines], loc="center right")
    return _save(figure, path)


def _stopped(row: dict) -> bool:
    """Stopped before its last step: by the scheduler, a health condition or an error."""
    return row.get("stop_reason") not in (None, "completed")


def plot_fid_trials(experiment: Experiment, path: Path) -> Path:
    """Every trial's FID curve; a stopped trial dashed, with an x at its last evaluation."""
    figure, ax = _figure()
    title = "FID of every trial"
    all_fids = []
    for row in experiment.rows:
        history = experiment.histories.get(row["trial"])
        steps, fids = _series(history.evaluations, "fid") if history else ([], [])
        if not steps:
            continue
        all_fids += fids
        stopped = _stopped(row)
        label = f"{row['trial']} (best {row['best_fid']:.4g})" if finite(row.get("best_fid")) else row["trial"]
        label += " stopped" if stopped else ""
        (line,) = ax.plot(steps, fids, "--" if stopped else "-", marker=".", label=label)
        if stopped:
            ax.plot(steps[-1], fids[-1], "x", color=line.get_color(), markersize=10, markeredgewidth=2)
    if not all_fids:
        _placeholder(ax, title, "no trial has been evaluated yet")
        return _save(figure, path)
    if _spans_decades(all_fids):
        _log_fid_axis(ax)
    ax.set(title=f"{title} (dashed, x: stopped early)", xlabel="training step", ylabel="FID (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(title="trial", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return _save(figure, path)


def _label(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def plot_effect(experiment: Experiment, key: str, path: Path) -> Path:
    """Best FID against one searched value: a scatter for numbers, a box and strip per category."""
    figure, ax = _figure()
    title = f"best FID against {key}"
    points = [(row.get(key), row["best_fid"]) for row in experiment.rows if finite(row.get("best_fid"))]
    if not points:
        _placeholder(ax, title, "no trial has a best FID yet")
        return _save(figure, path)
    if all(is_number(value) for value, _ in points):
        values = [float(value) for value, _ in points]
        ax.scatter(values, [fid for _, fid in points], s=40)
        best_value, best_fid = min(points, key=lambda p: p[1])
        ax.plot([best_value], [best_fid], "*", color="gold", markeredgecolor="black", markersize=16, label="best trial")
        ax.legend()
        if _spans_decades(values):
            ax.set_xscale("log")
    else:
        categories = sorted({_label(value) for value, _ in points})
        groups = [[fid for value, fid in points if _label(value) == category] for category in categories]
        positions = list(range(1, len(categories) + 1))
        ax.boxplot(groups, positions=positions, widths=0.5, showfliers=False)
        for position, group in zip(positions, groups):
            offsets = np.linspace(-0.15, 0.15, len(group)) if len(group) > 1 else [0.0]  # spread, not random
            ax.scatter([position + o for o in offsets], group, s=40, alpha=0.8, zorder=3)
        ax.set_xticks(positions, categories)
    ax.set(title=title, xlabel=key, ylabel="best FID (lower is better)")
    ax.grid(alpha=0.3)
    return _save(figure, path)


def plot_search_progress(experiment: Experiment, path: Path) -> Path:
    """Best FID so far against the number of trials and against the seconds trained (the search's cost)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(FIGURE_SIZE[0] * 1.5, FIGURE_SIZE[1]))
    by_trials, by_cost = figure.subplots(1, 2, sharey=True)
    progress = [p for p in search_progress(experiment.rows) if p["best_fid"] is not None]
    if not progress:
        _placeholder(by_trials, "best FID so far", "no trial has a best FID yet")
        return _save(figure, path)
    fids = [p["best_fid"] for p in progress]
    by_trials.step([p["trials"] for p in progress], fids, where="post", marker="o")
    by_trials.set(title="best FID so far, by trials", xlabel="trials started", ylabel="best FID (lower is better)")
    if all(p["trained_s"] > 0 for p in progress):
        by_cost.step([p["trained_s"] / 60 for p in progress], fids, where="post", marker="o")
        by_cost.set(title="best FID so far, by compute", xlabel="minutes trained, all trials")
    else:
        _placeholder(by_cost, "best FID so far, by compute", "the summary records no training time")
    for ax in (by_trials, by_cost):
        ax.grid(alpha=0.3)
    return _save(figure, path)


def _caption(frame, text: str):
    """The frame with a white band above it that says `text`."""
    from PIL import Image, ImageDraw, ImageFont

    band = 24
    captioned = Image.new("RGB", (frame.width, frame.height + band), "white")
    captioned.paste(frame, (0, band))
    ImageDraw.Draw(captioned).text((6, 4), text, fill="black", font=ImageFont.load_default(size=16))
    return captioned


def write_progress_gif(history: RunHistory, path: Path) -> Path:
    """One frame per evaluation grid in step order, each captioned with its step (Pillow's GIF writer)."""
    from PIL import Image

    steps = sorted(history.grids)
    grids = [Image.open(io.BytesIO(read_grid(history.grids[step]))).convert("RGB") for step in steps]
    width, height = grids[0].size
    scale = math.ceil(GIF_MIN_WIDTH / width) if width < GIF_MIN_WIDTH else 1
    size = (width * scale, height * scale)  # training writes one size; a stray other one is resized to it
    frames = [_caption(grid.resize(size, Image.NEAREST), f"step {step}") for grid, step in zip(grids, steps)]
    durations = [GIF_FRAME_MS] * (len(frames) - 1) + [GIF_LAST_FRAME_MS]  # rest on the last frame
    return save_gif(frames, path, durations)
