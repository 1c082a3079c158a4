"""benchmarks/search.py's accounting: the compute a sweep had spent when it first reached a target FID."""

import importlib.util
import math
from pathlib import Path

import pytest

from raygan.config import load_config
from raygan.tune import validate_sweep

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def search():
    spec = importlib.util.spec_from_file_location("search_benchmark", BENCHMARKS / "search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def report(time, trained_s, fid, started=None):
    return {"time": time, "trained_s": trained_s, "fid": fid, **({"started": started} if started is not None else {})}


def test_compute_to_reach_counts_every_trial_at_that_moment(search):
    trials = {
        "a": [report(100, 10, 5.0, started=80), report(120, 30, 2.0)],  # trained 100-120 for 20 s
        "b": [report(110, 10, 4.0, started=90), report(200, 30, 1.0)],  # paused 110-180, trained 180-200
        "c": [report(300, 5, 9.0, started=290)],  # not started when the target is reached
    }
    assert search.to_reach(trials, 2.0) == (30 + 10, 120 - 80)  # a's hit, b idle since its last report
    assert search.to_reach(trials, 4.0) == (10 + 20, 110 - 80)  # b's hit, a halfway to its next report
    assert search.to_reach(trials, 0.5) == (math.inf, math.inf)
    assert search.trained_at(trials["b"], 190) == 20  # 10 s into its 20 s before the report at 200


def test_the_target_needs_less_compute_and_a_best_as_good(search):
    def sweep(best, total, hit_time):
        reports = [report(10, total * 0.1, 50.0, started=0), report(hit_time, total, best)]
        return {"best_fid": best, "trained_s": total, "wall_s": 100.0, "failed": 0, "evaluations": {"t": reports}}

    result = search.figures(
        {
            "random": {0: sweep(3.0, 100, 90), 1: sweep(2.0, 100, 90), 2: sweep(4.0, 100, 90)},
            "optuna": {0: sweep(2.5, 50, 60), 1: sweep(3.0, 50, 60), 2: sweep(5.0, 50, 60)},
            "bohb": {0: sweep(2.0, 80, 60), 1: sweep(2.5, 80, 60), 2: sweep(2.9, 80, 60)},
        }
    )
    assert result["target_fid"] == 3.0 and result["random_median_trained_s"] == 100
    optuna, bohb = result["searchers"]["optuna"], result["searchers"]["bohb"]
    assert optuna["median_compute_to_target_s"] == 50 and optuna["target_met"] is True
    assert bohb["fraction_of_random_compute"] == 0.8 and bohb["target_met"] is False  # as good, too costly
    assert result["searchers"]["random"]["target_met"] is None


@pytest.mark.parametrize("algorithm", ["random", "optuna", "bohb"])
def test_the_benchmark_sweep_is_valid_for_every_searcher(algorithm):
    cfg = load_config(str(BENCHMARKS / "search.yaml"), [f"tune.search_alg.name={algorithm}", "seed=2"])
    validate_sweep(cfg)
    assert len(cfg.tune.search_space) == 5 and cfg.data.image_size == 8
