"""The training loop without Ray: the per-run time budget ends a run scored and checkpointed."""

import time

from raygan.config import build_config
from raygan.data import indexed_batches, load_dataset
from raygan.metrics.health import HealthMonitor
from raygan.train.loop import train_loop
from raygan.train.step import GANEngine

BUDGETED = {
    "data": {"image_size": 16}, "model": {"g_layers": 3, "d_layers": 3, "g_width": 8, "d_width": 8},
    "train": {"batch_size": 16, "steps": 10_000, "eval_every": 1000, "checkpoint_every": 1000, "report_every": 2,
              "time_budget_s": 0.5},
}  # fmt: skip


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
    train_loop(engine, slow_batches(cfg), cfg, report=lambda m, c: reports.append((m, c)),
               evaluate=lambda engine: {"fid": 50.0, "kid": 0.0}, monitor=monitor,
               time_budget_s=cfg.train.time_budget_s)  # fmt: skip
    return reports, monitor


def test_time_budget_stops_the_run_with_a_final_evaluation_and_checkpoint():
    cfg = build_config(BUDGETED)
    engine = GANEngine(cfg, 1, 10)
    reports, monitor = budgeted_run(engine, cfg)
    final, checkpointed = reports[-1]
    assert 0 < engine.step < cfg.train.steps and engine.step % cfg.train.report_every == 0
    assert checkpointed and "kid" in final  # scored and saved although neither was due
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
