"""The report's HTML: one page for a run, one for a sweep with a page per trial, every piece of text escaped,
and `write_report`, which reads everything first and then writes the folder."""

from __future__ import annotations

import csv
import html
import json
import math
import re
import statistics
from pathlib import Path
from typing import Any
from urllib.parse import quote

from raygan import storage
from raygan.errors import UserError
from raygan.report.loading import (
    Experiment,
    RunHistory,
    best_evaluation,
    detect,
    display_name,
    health_events,
    load_experiment,
    load_run,
    read_grid,
)
from raygan.report.plots import (
    has_modes,
    plot_effect,
    plot_fid,
    plot_fid_trials,
    plot_losses,
    plot_modes,
    plot_search_progress,
    write_progress_gif,
)
from raygan.tune.summary import RESULT_COLUMNS, finite, importance, is_number, search_summary

TABLE_COLUMNS = {  # the summary columns the sweep page shows, after the searched keys: column -> header
    "best_fid": "best FID",
    "best_step": "best step",
    "last_step": "last step",
    "trained_s": "trained (s)",
    "images_seen": "images seen",
    "health": "health",
    "stop_reason": "stop reason",
}

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
    path.write_bytes(read_grid(history.grids[step]))
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
        cells += [_text(row.get(column)) for column in TABLE_COLUMNS]
        table_rows.append(cells)
    header = ["rank", "trial", *experiment.searched, *TABLE_COLUMNS.values()]
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
