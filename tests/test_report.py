"""`raygan report`: run and experiment folders written the way training writes them, read back into pages.

The synthetic folders go through `RunLog` (the writer training uses) and `raygan.tune.write_summary`, so
writer and reader are tested together. The `slow` tests at the end train for real (they start Ray).
"""

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch
from conftest import run_module
from PIL import Image

from raygan.cli import main
from raygan.images import grid_array
from raygan.report import load_run, loss_keys, trial_runs, write_report
from raygan.storage import read_bytes
from raygan.train.runlog import RunLog, grid_name

RUN_FILES = ["index.html", "losses.png", "fid.png", "modes.png", "grid_best.png", "grid_last.png", "progress.gif"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_INSTALL = "apt-get install -y --no-install-recommends chromium  (Debian's chromium package)"


# ---------------------------------------------------------------------------------------------
# folders written like training writes them


def u_shaped_fid(step: int) -> float:
    """FID that falls to its best at step 150 and rises after it (training past the equilibrium)."""
    return 20.0 + (step - 150) ** 2 / 100


def write_run(
    run_uri,
    steps=range(25, 301, 25),
    eval_every=50,
    losses=("g_loss", "d_loss"),
    fid=u_shaped_fid,
    modes=True,
    events=(),
    stop_reason=None,
) -> list[int]:
    """metrics.jsonl and grids/ as training writes them; returns the evaluation steps."""
    log = RunLog(str(run_uri))
    evaluations = []
    for step in steps:
        metrics = {
            "step": step,
            "images_per_s": 1000.0 + step,
            "d_accuracy": 0.7,
            "d_skipped": 0,
            "g_skipped": 0,
            "lr_g": 2e-4,
            "lr_d": 2e-4,
            **{key: 1.0 + step / 1000 for key in losses},
        }
        grid = None
        if step % eval_every == 0:
            evaluations.append(step)
            happened = [{"step": s, "condition": c, "detail": f"{c} seen"} for s, c in events if s <= step]
            best = min(evaluations, key=fid)
            metrics.update(
                fid=fid(step),
                kid=fid(step) / 1000,
                kid_std=0.001,
                eval_s=0.5,
                new_best=int(best == step),
                best_fid=fid(best),
                best_step=best,
                diversity=0.2,
            )
            if modes:
                metrics.update(modes_covered=min(10, step // 25), modes_total=10, mode_kl=1.0 / step)
            conditions = {e["condition"] for e in happened}
            metrics.update({f"health_{c}": int(c in conditions) for c in ("nan", "collapse", "non_convergence")})
            metrics["health"] = {
                "status": happened[-1]["condition"] if happened else "ok",
                "flags": {c: c in conditions for c in ("nan", "collapse", "non_convergence")},
                "events": happened,
                "stop_reason": stop_reason if step == steps[-1] else None,
            }
            grid = grid_array(torch.rand(16, 3, 8, 8) * 2 - 1, 4)
        log.record(metrics, grid)
    log.close()
    assert not Path(log._tb_dir).exists()  # the TensorBoard staging folder goes with the run
    return evaluations


def summary_row(trial, searched: dict, fid=u_shaped_fid, last_step=300, stop_reason="completed") -> dict:
    evaluations = range(50, last_step + 1, 50)
    best = min(evaluations, key=fid)
    return {
        "trial": trial,
        "order": int(trial[1:]),
        **searched,
        "best_fid": fid(best),
        "best_step": best,
        "last_step": last_step,
        "trained_s": last_step / 10,
        "images_seen": last_step * 64,
        "health": "ok",
        "stop_reason": stop_reason,
        "best_checkpoint": f"runs/{trial}/checkpoint_{best:07d}",
    }


def shifted(offset: float):
    return lambda step: u_shaped_fid(step) + offset


@pytest.fixture
def run(tmp_path) -> Path:
    folder = tmp_path / "run"
    write_run(folder, events=[(100, "collapse"), (250, "non_convergence")])
    return folder


@pytest.fixture(scope="module")
def run_report(tmp_path_factory) -> tuple[Path, dict]:
    """(run, report result), shared by the tests that only read them."""
    folder = tmp_path_factory.mktemp("run") / "run"
    write_run(folder, events=[(100, "collapse"), (250, "non_convergence")])
    return folder, write_report(str(folder), tmp_path_factory.mktemp("run_report"))


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """Four trials: completed, stopped by the scheduler, a PBT trial in two run folders, and one that errored.
    Shared by the module: tests that change it work on a copy."""
    from raygan.tune import write_summary

    root = tmp_path_factory.mktemp("experiment") / "sweep"
    write_run(root / "runs" / "t0", fid=shifted(0))
    write_run(root / "runs" / "t1", steps=range(25, 101, 25), fid=shifted(30))  # stopped at step 100
    write_run(root / "runs" / "t2", steps=range(25, 176, 25), fid=shifted(500))  # its own run up to the exploit...
    write_run(root / "runs" / "t2-from-t0-100", steps=range(125, 301, 25), fid=shifted(5))  # ...then the donor's
    rows = [
        summary_row("t0", {"optim.d.lr": 1e-4, "model.g_activation": "relu"}),
        summary_row(
            "t1", {"optim.d.lr": 1e-2, "model.g_activation": "leaky_relu"}, shifted(30), 100, "stopped by the scheduler"
        ),
        summary_row("t2", {"optim.d.lr": 1e-3, "model.g_activation": "relu"}, shifted(5)),
        {
            "trial": "t3",
            "optim.d.lr": 3e-3,
            "model.g_activation": "leaky_relu",
            "best_fid": None,
            "best_step": None,
            "last_step": None,
            "health": None,
            "stop_reason": "error: boom",
            "best_checkpoint": None,
        },
    ]
    write_summary(str(root), rows, ["optim.d.lr", "model.g_activation"])
    return root


@pytest.fixture(scope="module")
def experiment_report(experiment, tmp_path_factory) -> dict:
    return write_report(str(experiment), tmp_path_factory.mktemp("experiment_report"))


# ---------------------------------------------------------------------------------------------
# checks


class _References(HTMLParser):
    def __init__(self):
        super().__init__()
        self.references, self.images = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if attrs.get(name):
                self.references.append(attrs[name])
        if tag == "img":
            self.images.append(attrs)


def parse(page: Path) -> _References:
    parser = _References()
    parser.feed(page.read_text())
    return parser


def missing_references(out: Path) -> list[str]:
    """Every src/href of every page under `out` that does not name an existing file."""
    missing = []
    for page in out.rglob("*.html"):
        for reference in parse(page).references:
            if urlparse(reference).scheme:
                continue
            if not (page.parent / unquote(reference)).is_file():
                missing.append(f"{page.relative_to(out)} -> {reference}")
    return missing


def gif_frames(path: Path) -> int:
    with Image.open(path) as gif:
        return gif.n_frames


# ---------------------------------------------------------------------------------------------
# runs


def test_run_report_writes_every_file(run_report):
    _, result = run_report
    out = Path(result["out"])
    assert result["kind"] == "run"
    assert sorted(result["files"]) == sorted(RUN_FILES)
    assert all((out / name).is_file() and (out / name).stat().st_size > 0 for name in RUN_FILES)
    assert missing_references(out) == []
    assert {img["src"] for img in parse(out / "index.html").images} == set(RUN_FILES) - {"index.html"}


def test_run_page_has_the_summary_table_and_the_health_events(run_report):
    page = (Path(run_report[1]["out"]) / "index.html").read_text()
    assert "<td>best FID</td><td>20 at step 150</td>" in page  # the lowest FID, not the last
    assert "<td>final FID</td><td>245 at step 300</td>" in page
    assert "<td>images/s (median)</td><td>1162.5</td>" in page
    assert "<td>non_convergence</td>" in page and "<td>collapse</td>" in page  # events, once each
    assert page.count("<td>collapse</td>") == 1


def test_gif_has_one_frame_per_evaluation_and_grids_are_the_right_steps(run_report):
    run, result = run_report
    out = Path(result["out"])
    assert gif_frames(out / "progress.gif") == 6  # evaluations at 50, 100, ..., 300
    assert (out / "grid_best.png").read_bytes() == (run / "grids" / grid_name(150)).read_bytes()
    assert (out / "grid_last.png").read_bytes() == (run / "grids" / grid_name(300)).read_bytes()


def test_run_without_mode_statistics_says_so(tmp_path):
    write_run(tmp_path / "run", modes=False)
    result = write_report(str(tmp_path / "run"), tmp_path / "out")
    out = Path(result["out"])
    assert "modes.png" not in result["files"] and not (out / "modes.png").exists()
    assert "No mode statistics" in (out / "index.html").read_text()
    assert missing_references(out) == []


def test_run_without_evaluations_yet(tmp_path):
    write_run(tmp_path / "run", steps=[25], eval_every=50)
    result = write_report(str(tmp_path / "run"), tmp_path / "out")
    assert sorted(result["files"]) == ["fid.png", "index.html", "losses.png"]
    page = (tmp_path / "out" / "index.html").read_text()
    assert "No image grids saved yet." in page and "No grid at the best step." in page
    assert missing_references(tmp_path / "out") == []


def test_loss_keys_cover_gan_wgan_and_combined():
    assert loss_keys([{"step": 1, "g_loss": 1, "d_loss": 1}]) == ["g_loss", "d_loss"]
    assert loss_keys([{"step": 1, "critic_loss": 1, "g_loss": 1}]) == ["g_loss", "critic_loss"]
    combined = [{"step": 1, "g_loss": 1, "d_loss": 1, "critic_loss": 1}, {"step": 2, "gp_loss": 1}]
    assert loss_keys(combined) == ["g_loss", "d_loss", "critic_loss", "gp_loss"]


def test_wgan_run_report(tmp_path):
    write_run(tmp_path / "run", losses=("g_loss", "critic_loss"))
    assert sorted(write_report(str(tmp_path / "run"), tmp_path / "out")["files"]) == sorted(RUN_FILES)


def test_report_reads_a_run_on_s3(tmp_path, s3):
    s3.bucket("raygan-report")
    write_run("s3://raygan-report/results/run")
    result = write_report("s3://raygan-report/results/run", tmp_path / "out")
    assert sorted(result["files"]) == sorted(RUN_FILES)
    assert gif_frames(tmp_path / "out" / "progress.gif") == 6


# ---------------------------------------------------------------------------------------------
# experiments


def test_experiment_report_writes_every_file(experiment_report):
    result = experiment_report
    out = Path(result["out"])
    assert result["kind"] == "experiment"
    expected = {
        "index.html",
        "fid_trials.png",
        "search_progress.png",
        "trials.csv",
        "effect_optim.d.lr.png",
        "effect_model.g_activation.png",
    }
    expected |= {f"trials/{t}/{name}" for t in ("t0", "t1", "t2") for name in RUN_FILES}  # t3 left no run
    assert set(result["files"]) == expected and result["files"][-1] == "index.html"
    assert all((out / name).is_file() for name in expected)
    assert missing_references(out) == []
    links = parse(out / "index.html").references
    assert {"trials/t0/index.html", "trials/t1/index.html", "trials/t2/index.html", "trials.csv"} <= set(links)


def test_experiment_table_is_sorted_by_best_fid(experiment_report):
    import csv

    out = Path(experiment_report["out"])
    with (out / "trials.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["trial"] for r in rows] == ["t0", "t2", "t1", "t3"]  # best FID 20, 25, 75, none
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0]["optim.d.lr"] == "0.0001" and rows[2]["stop_reason"] == "stopped by the scheduler"
    page = (out / "index.html").read_text()
    assert page.index(">t0<") < page.index(">t2<") < page.index(">t1<") < page.index("t3 (no run data)")
    assert "error: boom" in page


def test_experiment_report_shows_each_trials_cost_and_how_the_search_went(experiment, experiment_report):
    import csv

    out = Path(experiment_report["out"])
    with (out / "trials.csv").open() as f:
        rows = {r["trial"]: r for r in csv.DictReader(f)}
    assert rows["t1"]["trained_s"] == "10.0" and rows["t1"]["images_seen"] == "6400" and rows["t3"]["trained_s"] == ""
    page = (out / "index.html").read_text()
    assert "trained (s)" in page and "search_progress.png" in page and "Spearman" in page
    progress = experiment_report["best_so_far"]
    assert [p["trial"] for p in progress] == ["t0", "t1", "t2", "t3"]  # the order they were started in
    assert [p["best_fid"] for p in progress] == [20.0, 20.0, 20.0, 20.0] and progress[-1]["trained_s"] == 70.0
    assert experiment_report["importance"] == {
        "optim.d.lr": 1.0,
        "model.g_activation": None,
    }  # lr 1e-4 < 1e-3 < 1e-2, FID 20 < 25 < 50
    stored = json.loads((experiment / "search.json").read_text())  # what the sweep wrote beside summary.json
    assert stored["importance"] == experiment_report["importance"]


def test_an_optuna_sweeps_fanova_importance_is_shown_beside_the_rank_correlation(experiment, tmp_path):
    copy = shutil.copytree(experiment, tmp_path / "sweep")
    search = json.loads((copy / "search.json").read_text())
    (copy / "search.json").write_text(json.dumps({**search, "fanova": {"optim.d.lr": 0.9, "model.g_activation": 0.1}}))
    result = write_report(str(copy), tmp_path / "out")
    assert result["fanova"] == {"optim.d.lr": 0.9, "model.g_activation": 0.1}
    page = (tmp_path / "out" / "index.html").read_text()
    assert "fANOVA importance (optuna)" in page and "<td>0.9</td>" in page


def test_best_so_far_never_rises_and_cost_only_grows():
    from raygan.report import search_progress

    fids = [50.0, None, 30.0, 40.0, 10.0, 12.0]
    rows = [{"trial": f"t{i}", "order": i, "best_fid": fid, "trained_s": 5.0 * (i + 1)} for i, fid in enumerate(fids)]
    progress = search_progress(list(reversed(rows)))  # input order does not matter: "order" does
    assert [p["best_fid"] for p in progress] == [50.0, 50.0, 30.0, 30.0, 10.0, 10.0]
    assert [p["trained_s"] for p in progress] == [5.0, 15.0, 30.0, 50.0, 75.0, 105.0]


def test_importance_is_the_rank_correlation_of_numeric_values_with_best_fid():
    from raygan.report import importance

    rows = [
        {"lr": lr, "width": w, "act": a, "best_fid": fid}
        for lr, w, a, fid in [
            (1e-4, 64, "relu", 40.0),
            (3e-4, 32, "relu", 30.0),
            (1e-3, 16, "leaky", 10.0),
            (2e-3, 8, "leaky", None),
        ]
    ]
    assert importance(rows, ["lr", "width", "act"]) == {"lr": -1.0, "width": 1.0, "act": None}
    assert importance(rows[:2], ["lr"]) == {"lr": None}  # two scored trials say nothing


def test_pbt_trial_history_is_the_union_of_its_run_folders(experiment, experiment_report):
    runs = trial_runs(str(experiment))
    assert [Path(uri).name for uri in runs["t2"]] == ["t2", "t2-from-t0-100"]
    history = load_run(runs["t2"], "trial t2")
    assert [r["step"] for r in history.records] == list(range(25, 301, 25))
    fids = {r["step"]: r["fid"] for r in history.evaluations}
    assert fids[100] == shifted(500)(100) and fids[150] == shifted(5)(150)  # the continuation overrides step 150
    assert sorted(history.grids) == [50, 100, 150, 200, 250, 300]
    assert Path(history.grids[150]).parent.parent.name == "t2-from-t0-100"
    assert gif_frames(Path(experiment_report["out"]) / "trials" / "t2" / "progress.gif") == 6


def test_experiment_without_summary_is_read_from_its_runs(experiment, tmp_path):
    copy = shutil.copytree(experiment, tmp_path / "sweep")
    (copy / "summary.json").unlink()
    result = write_report(str(copy), tmp_path / "out")
    assert {"trials/t0/index.html", "trials/t1/index.html", "trials/t2/index.html"} <= set(result["files"])
    assert not any(name.startswith("effect_") for name in result["files"])  # searched keys are in summary.json
    assert missing_references(tmp_path / "out") == []


# ---------------------------------------------------------------------------------------------
# the command


def test_cli_prints_what_it_wrote_and_json_last(run, tmp_path, capsys):
    assert main(["report", str(run), "--out", str(tmp_path / "out"), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["kind"] == "run" and result["out"] == str((tmp_path / "out").resolve())
    assert sorted(result["files"]) == sorted(RUN_FILES)
    assert lines[0].startswith(f"wrote 7 files to {result['out']}")


def _bad_inputs(tmp_path) -> dict[str, Path]:
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    (tmp_path / "a_file").write_text("hello")
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "metrics.jsonl").write_text('{"step": 1}\n{"step": \n')
    (tmp_path / "no_records").mkdir()
    (tmp_path / "no_records" / "metrics.jsonl").write_text("")
    (tmp_path / "bad_summary").mkdir()
    (tmp_path / "bad_summary" / "summary.json").write_text("{")
    (tmp_path / "no_trials").mkdir()
    (tmp_path / "no_trials" / "summary.json").write_text("[]")
    names = ["missing", "empty", "other", "a_file", "corrupt", "no_records", "bad_summary", "no_trials"]
    return {name: tmp_path / name for name in names}


@pytest.mark.parametrize(
    "kind", ["missing", "empty", "other", "a_file", "corrupt", "no_records", "bad_summary", "no_trials"]
)
def test_bad_input_exits_2_and_writes_nothing(kind, tmp_path, capsys):
    bad = _bad_inputs(tmp_path)[kind]
    out = tmp_path / "out"
    assert main(["report", str(bad), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(bad) in lines[0], captured.err
    assert not out.exists()


def test_out_that_is_a_file_exits_2(run, tmp_path, capsys):
    (tmp_path / "out").write_text("not a folder")
    assert main(["report", str(run), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith("error: --out ")


def test_report_needs_out(run, capsys):
    assert main(["report", str(run)]) == 2
    assert "--out" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the page in a real browser


def images_in_chromium(page: Path, profile: Path) -> dict[str, str]:
    """src -> "yes" / "no" (the page's own script marks each <img> once loaded), "unmarked" if it never ran."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",  # let the page finish loading before the DOM is dumped
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    parser = _References()
    parser.feed(result.stdout)
    assert parser.images, f"Chromium showed no images; stdout: {result.stdout[:500]}"
    return {img["src"]: img.get("data-loaded", "unmarked") for img in parser.images}


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason=f"no chromium on PATH; install it: {CHROMIUM_INSTALL}")


@needs_chromium
def test_pages_render_in_chromium_without_missing_images(experiment_report, tmp_path):
    out = Path(experiment_report["out"])
    for page in (out / "index.html", out / "trials" / "t2" / "index.html"):
        loaded = images_in_chromium(page, tmp_path / "chromium-profile")
        assert set(loaded.values()) == {"yes"}, f"{page}: {loaded}"


@needs_chromium
def test_chromium_check_catches_a_missing_image(run, tmp_path):
    out = Path(write_report(str(run), tmp_path / "out")["out"])
    (out / "grid_last.png").unlink()
    loaded = images_in_chromium(out / "index.html", tmp_path / "chromium-profile")
    assert loaded["grid_last.png"] == "no"
    assert all(state == "yes" for src, state in loaded.items() if src != "grid_last.png")


# ---------------------------------------------------------------------------------------------
# real runs (these start Ray)


def _raygan(*args):
    result = run_module("raygan.cli", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def evaluations(run: Path) -> int:
    return sum("fid" in json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())


@pytest.mark.slow
def test_report_on_a_real_smoke_run(smoke_run, tmp_path):
    storage, _ = smoke_run
    result = _raygan("report", str(storage / "smoke"), "--out", str(tmp_path / "out"), "--json")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["kind"] == "run" and sorted(summary["files"]) == sorted(RUN_FILES)
    assert evaluations(storage / "smoke") >= 2  # smoke evaluates at steps 50 and 100 (more if resumed since)
    assert gif_frames(tmp_path / "out" / "progress.gif") == evaluations(storage / "smoke")
    assert missing_references(tmp_path / "out") == []
    if CHROMIUM:
        assert set(images_in_chromium(tmp_path / "out" / "index.html", tmp_path / "profile").values()) == {"yes"}


@pytest.mark.slow
def test_report_on_a_real_smoke_sweep_in_s3(smoke_sweep, s3, tmp_path):
    experiment, _ = smoke_sweep
    result = _raygan("report", experiment, "--out", str(tmp_path / "out"), "--json")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    stored = read_bytes(f"{experiment}/summary.json")
    assert stored is not None, f"{experiment}/summary.json is missing"
    rows = json.loads(stored)
    trials = [row["trial"] for row in rows]
    assert all(row["best_fid"] > 0 and row["stop_reason"] == "completed" for row in rows)  # Tune's table, from S3
    assert summary["kind"] == "experiment" and len(trials) == 2
    assert {"index.html", "fid_trials.png", "trials.csv", "effect_optim.d.lr.png"} <= set(summary["files"])
    for trial in trials:
        assert gif_frames(tmp_path / "out" / "trials" / trial / "progress.gif") == 2
    assert missing_references(tmp_path / "out") == []
    if CHROMIUM:
        for page in [tmp_path / "out" / "index.html", *(tmp_path / "out" / "trials").glob("*/index.html")]:
            assert set(images_in_chromium(page, tmp_path / "profile").values()) == {"yes"}, page


def test_runs_logged_with_the_old_upper_case_names_read_with_the_new_ones(tmp_path):
    from raygan.train.runlog import METRICS, read_metrics

    (tmp_path / METRICS).write_text(json.dumps({"step": 10, "D_loss": 1.2, "lr_G": 2e-4, "g_loss": 0.7}) + "\n")
    assert read_metrics(str(tmp_path)) == [{"step": 10, "d_loss": 1.2, "lr_g": 2e-4, "g_loss": 0.7}]
