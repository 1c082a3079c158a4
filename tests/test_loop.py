"""The training loop without Ray: an FID only with an evaluation, so a checkpoint between evaluations is
unscored; the per-run time budget ends a run scored and checkpointed."""

import json
import time

import pytest

from raygan.checkpoint import best_checkpoint, checkpoint_name, write_checkpoint
from raygan.cli import checkpoint_rows, main
from raygan.config import build_config
from raygan.data import indexed_batches, load_dataset
from raygan.metrics.health import HealthMonitor
from raygan.train.loop import train_loop
from raygan.train.step import GANEngine

CADENCE = {
    "data": {"image_size": 16},
    "model": {"g_layers": 3, "d_layers": 3, "g_width": 8, "d_width": 8, "latent_dim": 16},
    "train": {"batch_size": 16, "steps": 20, "eval_every": 10, "checkpoint_every": 5, "report_every": 5},
}
FIDS = {10: 30.0, 20: 20.0}  # what the stand-in evaluation scores at each evaluation step


def run_with_checkpoints(run):
    """train_loop as ray_train drives it: rank 0 writes a checkpoint folder at each checkpoint report."""
    cfg = build_config(CADENCE)
    dataset = load_dataset(cfg.data)
    engine = GANEngine(cfg, dataset.channels, dataset.num_classes)
    reports = []

    def report(metrics, with_checkpoint):
        reports.append((metrics, with_checkpoint))
        if with_checkpoint:
            write_checkpoint(run / checkpoint_name(engine.step), engine, cfg, metrics)

    evaluate = lambda engine: {"fid": FIDS[engine.step], "kid": 0.0}  # noqa: E731
    train_loop(engine, indexed_batches(dataset, 16, 0), cfg, report=report, evaluate=evaluate)
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m, _ in reports))  # marks it a run
    return reports


@pytest.fixture(scope="module")
def run_and_reports(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    return run, run_with_checkpoints(run)


def test_only_evaluations_report_an_fid(run_and_reports):
    _, reports = run_and_reports
    assert [(m["step"], checkpointed) for m, checkpointed in reports] == [(s, True) for s in (5, 10, 15, 20)]
    assert {m["step"]: m.get("fid") for m, _ in reports} == {5: None, 10: 30.0, 15: None, 20: 20.0}


def test_unscored_checkpoints_say_so_and_are_never_best(run_and_reports, capsys):
    run, _ = run_and_reports
    rows = {row["step"]: row for row in checkpoint_rows(str(run))}
    assert {step: row["fid"] for step, row in rows.items()} == {5: None, 10: 30.0, 15: None, 20: 20.0}
    assert [step for step, row in rows.items() if row["best"]] == [20]
    assert best_checkpoint(str(run)).endswith(checkpoint_name(20))
    assert main(["checkpoints", "list", str(run)]) == 0
    listed = {line.split()[1]: line.split()[3] for line in capsys.readouterr().out.splitlines()[1:]}
    assert listed == {
        checkpoint_name(5): "unscored",
        checkpoint_name(10): "30",
        checkpoint_name(15): "unscored",
        checkpoint_name(20): "20",
    }


def test_with_the_scored_checkpoints_gone_the_best_is_the_latest_not_a_borrowed_score(tmp_path):
    run = tmp_path / "run"
    run_with_checkpoints(run)
    for step in (10, 20):  # as Ray's keep_checkpoints might have deleted them
        for f in (run / checkpoint_name(step)).iterdir():
            f.unlink()
        (run / checkpoint_name(step)).rmdir()
    assert best_checkpoint(str(run)).endswith(checkpoint_name(15))  # the documented fallback: none is scored
    assert all(row["fid"] is None for row in checkpoint_rows(str(run)))


def test_ray_ranks_an_unscored_checkpoint_last():
    """Ray keeps checkpoints by "fid" (min); a checkpoint report without one would rank first (-inf)."""
    from raygan.train.ray_train import UNSCORED_FID, ray_metrics

    assert ray_metrics({"step": 5}, with_checkpoint=True) == {"step": 5, "fid": UNSCORED_FID}
    assert ray_metrics({"step": 10, "fid": 30.0}, with_checkpoint=True) == {"step": 10, "fid": 30.0}
    assert ray_metrics({"step": 5}, with_checkpoint=False) == {"step": 5}
    assert json.loads(json.dumps(UNSCORED_FID)) == UNSCORED_FID  # Ray stores scores as JSON: no inf


BUDGETED = {
    "data": {"image_size": 16},
    "model": {"g_layers": 3, "d_layers": 3, "g_width": 8, "d_width": 8},
    "train": {
        "batch_size": 16,
        "steps": 10_000,
        "eval_every": 1000,
        "checkpoint_every": 1000,
        "report_every": 2,
        "time_budget_s": 0.5,
    },
}


def slow_batches(cfg, seconds=0.05):
    """Real batches that take at least `seconds` each, so the budget runs out after a few steps."""
    batches = indexed_batches(load_dataset(cfg.data), cfg.train.batch_size, cfg.seed)

    def batch(k):
        time.sleep(seconds)
        return batches(k)

    return batch


def budgeted_run(engine, cfg):
    reports = []
    monitor = HealthMonitor(cfg.health, cfg.train.stop_on, cfg.train.patience)
    train_loop(
        engine,
        slow_batches(cfg),
        cfg,
        report=lambda m, c: reports.append((m, c)),
        evaluate=lambda engine: {"fid": 50.0, "kid": 0.0},
        monitor=monitor,
        time_budget_s=cfg.train.time_budget_s,
    )
    return reports, monitor


def test_time_budget_stops_the_run_with_a_final_evaluation_and_checkpoint():
    cfg = build_config(BUDGETED)
    engine = GANEngine(cfg, 1, 10)
    reports, monitor = budgeted_run(engine, cfg)
    final, checkpointed = reports[-1]
    assert 0 < engine.step < cfg.train.steps and engine.step % cfg.train.report_every == 0
    assert checkpointed and final["evaluated"] and "kid" in final  # scored and saved although neither was due
    assert monitor.stop_reason.startswith("time budget") and final["health"]["stop_reason"] == monitor.stop_reason
    assert final["trained_s"] >= cfg.train.time_budget_s and engine.trained_s == final["trained_s"]
    assert final["images_seen"] == engine.step * cfg.train.batch_size
    assert all(m["trained_s"] < cfg.train.time_budget_s for m, _ in reports[:-1])  # no earlier report was over


def test_a_resumed_run_counts_the_seconds_it_trained_before():
    cfg = build_config(BUDGETED)
    engine = GANEngine(cfg, 1, 10)
    engine.load_state_dict({**engine.state_dict(), "step": 100, "trained_s": 10.0})  # as restored from a checkpoint
    reports, monitor = budgeted_run(engine, cfg)
    assert engine.step == 102 and len(reports) == 1 and monitor.stop_reason.startswith("time budget")
    assert engine.state_dict()["trained_s"] >= 10.0


def test_without_a_budget_the_run_reports_its_cost_and_runs_to_the_end():
    cfg = build_config(BUDGETED, {"train.time_budget_s": None, "train.steps": 4})
    engine = GANEngine(cfg, 1, 10)
    reports, monitor = budgeted_run(engine, cfg)
    assert engine.step == 4 and monitor.stop_reason is None
    assert [m["images_seen"] for m, _ in reports] == [32, 64] and reports[-1][0]["trained_s"] > 0
