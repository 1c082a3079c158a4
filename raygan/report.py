"""Pictures of a run or a sweep: curves, image grids, a progress GIF and one HTML page that shows them.

    raygan report ~/raygan_results/exp1 --out report_exp1        # a run: losses, FID/KID, modes, grids, GIF
    raygan report s3://bucket/sweeps/sweep1 --out report_sweep1   # a sweep: the trials side by side

    from raygan.report import write_report
    write_report("~/raygan_results/exp1", "report_exp1")          # {"out", "kind", "files"}

Runs and experiments are read through `raygan.storage` (local folders and s3:// alike); the report is
written to a local folder. Everything is read and checked before anything is written, so bad input
(a folder that is neither a run nor an experiment) raises UserError and leaves no files behind.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from raygan import storage
from raygan.errors import UserError
from raygan.images import save_gif
from raygan.train.runlog import GRIDS, read_metrics
from raygan.tune.summary import (
    RESULT_COLUMNS,
    RUNS,
    SUMMARY,
    TrialRow,
    finite,
    importance,
    is_number,
    parse_run_folder,
    read_fanova,
    read_summary,
    search_progress,
    search_summary,
    searched_keys,
)

LOSS_LABELS = {"g_loss": "G loss", "d_loss": "D loss", "critic_loss": "critic loss"}
FIGURE_SIZE = (8, 4.5)  # inches, at 100 dpi: 800 x 450 pixels
GIF_MIN_WIDTH = 320  # small grids are scaled up (whole pixels) so that the caption stays readable
GIF_FRAME_MS, GIF_LAST_FRAME_MS = 600, 2000


# ---------------------------------------------------------------------------------------------
# reading runs and experiments (through raygan.storage, so s3:// works too)


@dataclass
class RunHistory:
    """One run's records (sorted by step) and grids; for a PBT trial, the union of its run folders."""

    name: str
    sources: list[str]
    records: list[dict]
    grids: dict[int, str] = field(default_factory=dict)  # step -> URI of the grid PNG

    @property
    def evaluations(self) -> list[dict]:
        return [r for r in self.records if "fid" in r]


def _list(uri: str) -> list[str]:
    try:
        return storage.list_dir(uri)
    except (OSError, ValueError):  # a file, or a URI pyarrow cannot open: neither is a run
        return []


def detect(uri: str) -> str:
    """ "run" or "experiment"; anything else is a UserError that names the path and what is missing."""
    names = _list(uri)
    if SUMMARY in names or RUNS in names:
        return "experiment"
    if "metrics.jsonl" in names:
        return "run"
    if not names:
        state = "is a file" if _is_file(uri) else "does not exist or is empty"
        raise UserError(f"{uri}: {state}; expected a run folder (metrics.jsonl) or an experiment ({SUMMARY}, {RUNS}/)")
    raise UserError(f"{uri}: not a run (no metrics.jsonl) nor an experiment (no {SUMMARY} or {RUNS}/)")


def _is_file(uri: str) -> bool:
    try:
        return storage.is_file(uri)
    except (OSError, ValueError):  # a URI pyarrow cannot open is no file either
        return False


def _read_records(run_uri: str) -> list[dict]:
    try:
        records = read_metrics(run_uri)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{storage.join(run_uri, 'metrics.jsonl')}: a line is not valid JSON") from None
    if any(not isinstance(r, dict) or not finite(r.get("step")) for r in records):
        raise UserError(f"{storage.join(run_uri, 'metrics.jsonl')}: a line without a numeric step")
    by_step = {int(r["step"]): r for r in records}  # a repeated step: the later line wins
    return [by_step[step] for step in sorted(by_step)]


def _read_grids(run_uri: str) -> dict[int, str]:
    folder = storage.join(run_uri, GRIDS)
    grids = {}
    for name in _list(folder):
        match = re.fullmatch(r"step_(\d+)\.png", name)
        if match:
            grids[int(match.group(1))] = storage.join(folder, name)
    return grids


def load_run(run_uris: list[str], name: str) -> RunHistory:
    """One history from run folders in order; a later run replaces everything from its first step on.

    That is how a PBT trial continues: `runs/T` up to the exploit, then `runs/T-from-DONOR-STEP`.
    """
    records: list[dict] = []
    grids: dict[int, str] = {}
    for uri in run_uris:
        run_records, run_grids = _read_records(uri), _read_grids(uri)
        if run_records:
            start = run_records[0]["step"]
            records = [r for r in records if r["step"] < start] + run_records
            grids = {step: grid for step, grid in grids.items() if step < start}
        grids.update(run_grids)
    return RunHistory(name=name, sources=list(run_uris), records=records, grids=grids)


def trial_runs(experiment_uri: str) -> dict[str, list[str]]:
    """trial id -> its run folders under runs/, its own first, then PBT continuations by exploit step."""
    runs: dict[str, list[tuple[int, str]]] = {}
    for name in _list(storage.join(experiment_uri, RUNS)):
        folder = parse_run_folder(name)
        order = -1 if folder.donor is None else folder.step if folder.step is not None else 0
        runs.setdefault(folder.trial, []).append((order, name))
    return {
        trial: [storage.join(experiment_uri, RUNS, name) for _, name in sorted(named)] for trial, named in runs.items()
    }


def best_evaluation(history: RunHistory) -> dict | None:
    """The evaluation with the lowest finite FID (the first of equals)."""
    scored = [r for r in history.evaluations if finite(r.get("fid"))]
    return min(scored, key=lambda r: r["fid"]) if scored else None


def health_events(history: RunHistory) -> list[dict]:
    """Every health event any evaluation reported, once, by step."""
    seen = {}
    for record in history.evaluations:
        for event in (record.get("health") or {}).get("events") or []:
            if isinstance(event, dict) and finite(event.get("step")):
                seen.setdefault((event["step"], str(event.get("condition"))), event)
    return [seen[key] for key in sorted(seen)]


def _row_from_history(trial: str, history: RunHistory | None) -> dict:
    """A summary row for a trial that summary.json does not list (a sweep still running, or interrupted)."""
    row = TrialRow(trial=trial)
    if history is not None and history.records:
        best = best_evaluation(history)
        last_health = (history.evaluations[-1].get("health") or {}) if history.evaluations else {}
        row.best_fid = best["fid"] if best else None
        row.best_step = best["step"] if best else None
        row.last_step = history.records[-1]["step"]
        row.health = last_health.get("status")
        row.stop_reason = last_health.get("stop_reason")
        row.trained_s = history.records[-1].get("trained_s")
        row.images_seen = history.records[-1].get("images_seen")
    return row.to_dict()


def _sort_key(row: dict) -> float:
    return row["best_fid"] if finite(row.get("best_fid")) else math.inf


@dataclass
class Experiment:
    uri: str
    rows: list[dict]  # sorted by best FID, trials without one last
    searched: list[str]
    histories: dict[str, RunHistory]  # trial -> history, for trials that left a run folder with records
    fanova: dict[str, float] | None = None  # optuna's importance, from search.json (optuna sweeps)


def load_experiment(experiment_uri: str) -> Experiment:
    summary = read_summary(experiment_uri)
    runs = trial_runs(experiment_uri)
    rows = [dict(r, trial=str(r["trial"])) for r in summary or []]
    histories = {}
    for trial, uris in runs.items():
        history = load_run(uris, f"trial {trial}")
        if history.records:
            histories[trial] = history
    listed = {row["trial"] for row in rows}
    rows += [_row_from_history(trial, histories.get(trial)) for trial in sorted(runs) if trial not in listed]
    if not rows:
        raise UserError(f"{experiment_uri}: no trials ({SUMMARY} lists none and {RUNS}/ holds no run folders)")
    fanova = read_fanova(experiment_uri)
    return Experiment(experiment_uri, sorted(rows, key=_sort_key), searched_keys(summary or []), histories, fanova)


# ---------------------------------------------------------------------------------------------
# figures: one function each, matplotlib's object API (no pyplot, so no global state or GUI backend)


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
    grids = [Image.open(io.BytesIO(_read_grid(history.grids[step]))).convert("RGB") for step in steps]
    width, height = grids[0].size
    scale = math.ceil(GIF_MIN_WIDTH / width) if width < GIF_MIN_WIDTH else 1
    size = (width * scale, height * scale)  # training writes one size; a stray other one is resized to it
    frames = [_caption(grid.resize(size, Image.NEAREST), f"step {step}") for grid, step in zip(grids, steps)]
    durations = [GIF_FRAME_MS] * (len(frames) - 1) + [GIF_LAST_FRAME_MS]  # rest on the last frame
    return save_gif(frames, path, durations)


def _read_grid(uri: str) -> bytes:
    data = storage.read_bytes(uri)
    if data is None:
        raise FileNotFoundError(f"{uri}: grid disappeared while the report was written")
    return data


# ---------------------------------------------------------------------------------------------
# HTML: a plain template, every piece of text escaped

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
img.grid {{ image-rendering: pixelated; width: 320px; max-width: 100%; }}
.missing {{ color: #888; font-style: italic; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; vertical-align: top; }}
</style>
</head>
<body>
<h1>{title}</h1>
{body}
<script>
// marks every image data-loaded="yes" or "no" once the page has loaded (the tests check it in headless Chromium)
window.addEventListener("load", function () {{
  for (const img of document.images) img.dataset.loaded = img.complete && img.naturalWidth > 0 ? "yes" : "no";
}});
</script>
</body>
</html>
"""


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return html.escape(value if isinstance(value, str) else json.dumps(value))


def _img(src: str, alt: str, css_class: str = "") -> str:
    cls = f' class="{css_class}"' if css_class else ""
    return f'<img src="{html.escape(quote(src))}" alt="{html.escape(alt)}"{cls}>'


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(quote(href))}">{html.escape(text)}</a>'


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Cells are HTML already (escaped by the caller)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>\n" for row in rows)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>"


def _missing(message: str) -> str:
    return f'<p class="missing">{html.escape(message)}</p>'


# ---------------------------------------------------------------------------------------------
# the run report


def _run_summary(history: RunHistory, stop_reason: str | None) -> list[tuple[str, Any]]:
    last = history.evaluations[-1] if history.evaluations else {}
    best = best_evaluation(history)
    last_health = last.get("health") or {}
    speeds = [r["images_per_s"] for r in history.records if finite(r.get("images_per_s"))]
    return [
        ("last step", history.records[-1]["step"]),
        ("evaluations", len(history.evaluations)),
        ("best FID", f"{best['fid']:.4g} at step {best['step']}" if best else None),
        ("final FID", f"{last['fid']:.4g} at step {last['step']}" if is_number(last.get("fid")) else None),
        ("health", last_health.get("status")),
        ("stop reason", stop_reason or last_health.get("stop_reason")),
        ("images/s (median)", f"{statistics.median(speeds):.1f}" if speeds else None),
    ]


def _copy_grid(history: RunHistory, step: int, path: Path) -> Path:
    path.write_bytes(_read_grid(history.grids[step]))
    return path


def write_run_report(
    history: RunHistory, out: Path, stop_reason: str | None = None, parent_link: str | None = None
) -> list[Path]:
    """Figures, grids, the GIF and index.html for one run in `out`; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [plot_losses(history, out / "losses.png"), plot_fid(history, out / "fid.png")]
    sections = [
        "<h2>Losses</h2>" + _img("losses.png", "G, D and critic losses over training steps"),
        "<h2>FID and KID</h2>" + _img("fid.png", "FID and KID over training steps, best FID marked, health events"),
    ]
    if has_modes(history):
        written.append(plot_modes(history, out / "modes.png"))
        sections.append("<h2>Mode coverage</h2>" + _img("modes.png", "modes covered and their KL over training steps"))
    else:
        sections.append("<h2>Mode coverage</h2>" + _missing("No mode statistics in this run's evaluations."))
    events = health_events(history)
    event_rows = [[_text(e.get("step")), _text(e.get("condition")), _text(e.get("detail"))] for e in events]
    sections.append(
        "<h2>Health events</h2>"
        + (_table(["step", "condition", "detail"], event_rows) if events else _missing("No health events."))
    )

    samples = []
    best = best_evaluation(history)
    if best is not None and best["step"] in history.grids:
        written.append(_copy_grid(history, best["step"], out / "grid_best.png"))
        samples.append(
            f"<figure>{_img('grid_best.png', 'samples at the best step', 'grid')}"
            f"<figcaption>best FID, step {best['step']}</figcaption></figure>"
        )
    else:
        samples.append(_missing("No grid at the best step."))
    if history.grids:
        last = max(history.grids)
        written.append(_copy_grid(history, last, out / "grid_last.png"))
        written.append(write_progress_gif(history, out / "progress.gif"))
        samples.append(
            f"<figure>{_img('grid_last.png', 'samples at the last evaluation', 'grid')}"
            f"<figcaption>last grid, step {last}</figcaption></figure>"
        )
        samples.append(
            f"<figure>{_img('progress.gif', 'samples at every evaluation', 'grid')}"
            f"<figcaption>every evaluation ({len(history.grids)} frames)</figcaption></figure>"
        )
    else:
        samples.append(_missing("No image grids saved yet."))
    sections.append("<h2>Samples</h2>\n" + "\n".join(samples))

    summary = _table(["", ""], [[html.escape(k), _text(v)] for k, v in _run_summary(history, stop_reason)])
    sources = "".join(f"<li><code>{html.escape(s)}</code></li>" for s in history.sources)
    back = f"<p>{_link(parent_link, 'back to the experiment')}</p>" if parent_link else ""
    body = f"{back}<ul>{sources}</ul>\n{summary}\n" + "\n".join(sections)
    index = out / "index.html"
    index.write_text(PAGE.format(title=html.escape(history.name), body=body))
    return written + [index]


# ---------------------------------------------------------------------------------------------
# the experiment report


def _safe_name(text: str) -> str:
    """A file name: anything but letters, digits, dot, dash and underscore becomes _."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def write_trials_csv(experiment: Experiment, path: Path) -> Path:
    columns = ["rank", "trial", *experiment.searched, *RESULT_COLUMNS]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for rank, row in enumerate(experiment.rows, 1):
            writer.writerow({**row, "rank": rank})
    return path


def write_experiment_report(experiment: Experiment, out: Path) -> list[Path]:
    """fid_trials.png, search_progress.png, effect_<key>.png, trials.csv, trials/<trial>/ and index.html in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written = [
        plot_fid_trials(experiment, out / "fid_trials.png"),
        plot_search_progress(experiment, out / "search_progress.png"),
        write_trials_csv(experiment, out / "trials.csv"),
    ]
    effects = []
    for key in experiment.searched:
        path = plot_effect(experiment, key, out / f"effect_{_safe_name(key)}.png")
        written.append(path)
        effects.append(_img(path.name, f"best FID against {key}"))

    table_rows = []
    for rank, row in enumerate(experiment.rows, 1):
        trial = row["trial"]
        history = experiment.histories.get(trial)
        if history is not None:
            folder = Path("trials") / _safe_name(trial)
            written += write_run_report(history, out / folder, row.get("stop_reason"), parent_link="../../index.html")
            name = _link(f"{folder.as_posix()}/index.html", trial)
        else:
            name = html.escape(trial) + " (no run data)"
        cells = [str(rank), name, *[_text(row.get(k)) for k in experiment.searched]]
        cells += [
            _text(row.get(k))
            for k in ("best_fid", "best_step", "last_step", "trained_s", "images_seen", "health", "stop_reason")
        ]
        table_rows.append(cells)
    header = [
        "rank",
        "trial",
        *experiment.searched,
        "best FID",
        "best step",
        "last step",
        "trained (s)",
        "images seen",
        "health",
        "stop reason",
    ]
    ranks = importance(experiment.rows, experiment.searched)
    fanova = experiment.fanova or {}
    importance_table = _table(
        ["searched value", "Spearman rank correlation with best FID"]
        + (["fANOVA importance (optuna)"] if fanova else []),
        [[html.escape(key), _text(rho)] + ([_text(fanova.get(key))] if fanova else []) for key, rho in ranks.items()],
    )
    body = "\n".join(
        [
            f"<p><code>{html.escape(experiment.uri)}</code>: {len(experiment.rows)} trials, sorted by best FID "
            f"({_link('trials.csv', 'trials.csv')}).</p>",
            _table(header, table_rows),
            "<h2>FID of every trial</h2>" + _img("fid_trials.png", "FID curves of all trials"),
            "<h2>How the search went</h2>" + _img("search_progress.png", "best FID so far by trials and by compute"),
            "<h2>Which values mattered</h2><p>Negative: larger values gave lower (better) FID; - for categories and "
            "too few trials.</p>" + (importance_table if ranks else _missing("This sweep searched no keys.")),
            "<h2>Effect of each searched value</h2>" + ("\n".join(effects) or _missing("This sweep searched no keys.")),
        ]
    )
    index = out / "index.html"
    title = f"sweep {display_name(experiment.uri)}"
    index.write_text(PAGE.format(title=html.escape(title), body=body))
    return written + [index]


# ---------------------------------------------------------------------------------------------
# the entry point


def display_name(uri: str) -> str:
    """The folder's own name: `exp1` for ~/raygan_results/exp1, s3://bucket/sweeps/exp1 and `.` inside it."""
    return storage.basename(uri) if storage.is_uri(uri) else Path(uri).resolve().name


def write_report(uri: str, out: str | Path) -> dict:
    """Report on a run or an experiment: {"out": absolute folder, "kind": "run"|"experiment", "files": [...]}.

    `files` are relative to `out`, index.html last. Input is read and checked before `out` is created.
    """
    uri = storage.expand(uri)
    out = Path(out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    kind = detect(uri)
    if kind == "run":
        history = load_run([uri], display_name(uri))
        if not history.records:
            raise UserError(f"{storage.join(uri, 'metrics.jsonl')}: holds no records yet")
        written = write_run_report(history, out)
        search = {}
    else:
        experiment = load_experiment(uri)
        written = write_experiment_report(experiment, out)
        search = search_summary(experiment.rows, experiment.searched, experiment.fanova)
    return {"out": str(out), "kind": kind, "files": [p.relative_to(out).as_posix() for p in written], **search}
