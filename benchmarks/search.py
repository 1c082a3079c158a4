"""Does model-based search beat random search? The same space and budget searched by random + ASHA,
optuna (TPE) + ASHA and BOHB (its own HyperBand), three seeds each, through `python -m raygan.tune`.

    .venv/bin/python benchmarks/search.py --out search.json   # 9 sweeps, about 45 minutes on 2 cores
    .venv/bin/python benchmarks/search.py --trials 4 --steps 40 --seeds 1   # a smoke run, about 4 minutes

The sweep is benchmarks/search.yaml: the digits FID recipe's nets at 8x8, 16 trials of up to 400 steps,
two at a time (1 CPU each), evaluations every quarter of the steps, over both learning rates, D's layer
count, G's EMA and label smoothing. ASHA stops weak trials at 100 or 200 steps; BOHB's HyperBand sizes its
brackets from max_t (the 4 evaluations in train.steps) and the reduction factor (2). A seed sets the
config's `seed`: the searcher's seed (Tune's random sampler, optuna, BOHB) and every trial's
training seed.
Measured 2026-11-29 on the quiet 2-core machine: a sweep's wall time was 4.2-4.6 minutes (random),
4.1-4.8 (optuna) and 6.0-6.7 (BOHB), much of it trials starting their Train workers (~20 s each, BOHB's
resumed trials again); the 9 sweeps took 45 minutes. The table is in benchmarks/README.md.

Sweeps run one at a time, seeds outermost, so drift of the machine falls on all three searchers alike. A
sweep that finished (NAME.wall.json beside it says exit 0) is read, not run again, so an interrupted
benchmark continues where it stopped; one that did not finish is started afresh. Nothing else should run:
the timings are the point, and with a second Ray instance on the machine sweeps have stalled (the script
refuses to start a sweep beside one).

Compute is seconds of training (`trained_s`: the training loop, evaluations included, summed over
trials; trial start-up and a paused BOHB trial's restarts are not in it, the sweep's wall time is shown
beside it). "Compute to reach F" is what the whole sweep had spent at the moment an evaluation first
scored FID <= F: every trial's `trained_s` at that moment, from Tune's per-trial result.json (each
evaluation's wall-clock timestamp and `trained_s`; between two reports a trial counts as training only
for the last seconds before the later one that its `trained_s` grew by). Summing whole trials in the
order they were created would charge the trial that reaches F for its training after it did, and ignore
which trials ran beside it. "Wall to reach F" is that moment less the start of the sweep's first trial.

Printed: per searcher, the median over seeds of the best FID, each seed's best, the median compute and
wall time to reach random search's median best FID (a seed that never reaches it counts as never; two
nevers make the median never), the compute as a fraction of random search's median total compute, and
the median compute and wall time of a whole sweep. Target (issue #22): a model-based searcher reaches
random's median best with at most 60% of random's compute and ends at least as good.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = Path(__file__).resolve().parent / "search.yaml"
ALGORITHMS = ("random", "optuna", "bohb")
TARGET_FRACTION = 0.6


def experiment_name(algorithm: str, seed: int, trials: int, steps: int) -> str:
    return f"search-{algorithm}-s{seed}-{trials}x{steps}"  # the budget in the name: other budgets never mix


def run_sweep(storage: Path, name: str, algorithm: str, seed: int, trials: int, steps: int, limit_s: float) -> dict:
    """`python -m raygan.tune` on search.yaml; returns the sweep's wall time and exit status. Its output
    goes to NAME.log beside the experiment. A sweep still running after `limit_s` is interrupted (Ctrl-C:
    Tune stops its trials and Ray shuts down) and counts as failed."""
    folder = storage / name
    if folder.exists():  # an interrupted attempt: Tune would not start a new experiment over it
        shutil.rmtree(folder)
    milestone = max(steps // 4, 1)  # evaluations, and ASHA's first rung, at a quarter of the steps
    overrides = {
        "seed": seed,
        "tune.search_alg.name": algorithm,
        "tune.num_samples": trials,
        "train.steps": steps,
        "train.eval_every": milestone,
        "train.checkpoint_every": milestone,
        "train.report_every": milestone,
        "tune.scheduler.grace_period": milestone,
    }
    command = [sys.executable, "-m", "raygan.tune", str(CONFIG), "--name", name, "--storage", str(storage)]
    for key, value in overrides.items():
        command += ["--set", f"{key}={value}"]
    log = storage / f"{name}.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        out.write(" ".join(command) + "\n")
        out.flush()
        sweep = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = sweep.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            sweep.send_signal(signal.SIGINT)
            try:
                sweep.wait(timeout=120)
            except subprocess.TimeoutExpired:
                sweep.kill()
                sweep.wait()
            code = "timeout"
    wall = time.perf_counter() - start
    (storage / f"{name}.wall.json").write_text(json.dumps({"wall_s": wall, "returncode": code}))
    return {"wall_s": wall, "returncode": code}


def evaluations(folder: Path) -> dict[str, list[dict]]:
    """Each trial's evaluations from Tune's result.json, in the order it reported them: timestamp,
    trained_s, fid; the first also says when the trial started (Tune's time_total_s counts from there)."""
    trials = {}
    for result_file in sorted(folder.glob("trial_*/result.json")):
        records = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        records = [r for r in records if r.get("fid") is not None and r.get("trained_s") is not None]
        if records:
            trials[records[0]["trial_id"]] = [
                {"time": r["timestamp"], "trained_s": r["trained_s"], "fid": r["fid"]} for r in records
            ]
            trials[records[0]["trial_id"]][0]["started"] = records[0]["timestamp"] - records[0]["time_total_s"]
    return trials


def trained_at(reports: list[dict], moment: float) -> float:
    """A trial's trained_s at wall-clock `moment`: between two reports it trained for as many seconds as
    its trained_s grew, ending at the later report (a paused trial is idle before that)."""
    before = 0.0
    for report in reports:
        if report["time"] <= moment:
            before = report["trained_s"]
            continue
        grown = report["trained_s"] - before
        return before + min(max(moment - (report["time"] - grown), 0.0), grown)
    return before


def to_reach(trials: dict[str, list[dict]], target: float) -> tuple[float, float]:
    """When an evaluation first scored FID <= target: the seconds all trials together had trained, and the
    sweep's wall-clock seconds since its first trial started; (inf, inf) if none did."""
    hits = [
        (r["time"], trial, r["trained_s"]) for trial, reports in trials.items() for r in reports if r["fid"] <= target
    ]
    if not hits:
        return math.inf, math.inf
    moment, hit_trial, hit_trained = min(hits)
    others = sum(trained_at(reports, moment) for trial, reports in trials.items() if trial != hit_trial)
    started = min(reports[0]["started"] for reports in trials.values())
    return others + hit_trained, moment - started


def read_sweep(storage: Path, name: str) -> dict | None:
    """The sweep's figures, or None unless it ran to its end (an interrupted sweep writes a summary too)."""
    folder = storage / name
    wall_file = storage / f"{name}.wall.json"
    finished = wall_file.exists() and json.loads(wall_file.read_text())["returncode"] == 0
    if not finished or not (folder / "summary.json").exists():
        return None
    rows = json.loads((folder / "summary.json").read_text())
    scored = [row for row in rows if row["best_fid"] is not None and math.isfinite(row["best_fid"])]
    best = min(scored, key=lambda row: row["best_fid"]) if scored else None
    return {
        "experiment": str(folder),
        "trials": len(rows),
        "failed": sum(row["stop_reason"].startswith("error") for row in rows),
        "best_fid": best["best_fid"] if best else math.inf,
        "best_trial": best["trial"] if best else None,
        "trained_s": sum(row.get("trained_s") or 0.0 for row in rows),
        "wall_s": json.loads(wall_file.read_text())["wall_s"],
        "evaluations": evaluations(folder),
    }


def other_ray_instances() -> list[str]:
    """GCS addresses of Ray instances running here that the sweeps would not join (each starts its own
    unless RAY_ADDRESS names a cluster)."""
    import os

    from ray._private.services import find_gcs_addresses

    return [] if os.environ.get("RAY_ADDRESS") else sorted(find_gcs_addresses())


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan  # inf sorts last: two of three never is never


def figures(sweeps: dict[str, dict[int, dict]]) -> dict:
    """Per searcher: bests, compute to reach random's median best, and whether the target holds."""
    random_sweeps = list(sweeps.get("random", {}).values())
    target = median([s["best_fid"] for s in random_sweeps])
    random_compute = median([s["trained_s"] for s in random_sweeps])
    out: dict = {"target_fid": target, "random_median_trained_s": random_compute, "searchers": {}}
    for algorithm, by_seed in sweeps.items():
        reach = {seed: to_reach(s["evaluations"], target) for seed, s in by_seed.items()}
        best = median([s["best_fid"] for s in by_seed.values()])
        compute = median([trained for trained, _ in reach.values()])
        fraction = compute / random_compute if random_compute else math.nan
        out["searchers"][algorithm] = {
            "median_best_fid": best,
            "best_fid": {seed: s["best_fid"] for seed, s in by_seed.items()},
            "compute_to_target_s": {seed: trained for seed, (trained, _) in reach.items()},
            "median_compute_to_target_s": compute,
            "wall_to_target_s": {seed: wall for seed, (_, wall) in reach.items()},
            "median_wall_to_target_s": median([wall for _, wall in reach.values()]),
            "fraction_of_random_compute": fraction,
            "median_trained_s": median([s["trained_s"] for s in by_seed.values()]),
            "median_wall_s": median([s["wall_s"] for s in by_seed.values()]),
            "failed_trials": sum(s["failed"] for s in by_seed.values()),
            "target_met": None if algorithm == "random" else bool(fraction <= TARGET_FRACTION and best <= target),
        }
    return out


def table(result: dict) -> str:
    def number(value: float, digits: str = ".3f") -> str:
        return "never" if value == math.inf else "-" if value is None or math.isnan(value) else format(value, digits)

    def seconds(value: float) -> str:
        return number(value, ".0f") + (" s" if math.isfinite(value) else "")

    header = [
        "searcher",
        "median best FID",
        "each seed's best",
        "compute to reach",
        "of random's compute",
        "wall to reach",
        "trained / wall (median)",
        "target",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for algorithm, s in result["searchers"].items():
        verdict = {None: "-", True: "met", False: "not met"}[s["target_met"]]
        lines.append(
            f"| {algorithm} | {number(s['median_best_fid'])} | "
            f"{', '.join(number(v) for v in s['best_fid'].values())} | "
            f"{seconds(s['median_compute_to_target_s'])} | {number(s['fraction_of_random_compute'], '.2f')} | "
            f"{seconds(s['median_wall_to_target_s'])} | "
            f"{seconds(s['median_trained_s'])} / {seconds(s['median_wall_s'])} | {verdict} |"
        )
    return (
        f"target: random search's median best FID {number(result['target_fid'])}; its median compute "
        f"{seconds(result['random_median_trained_s'])} of training\n" + "\n".join(lines)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", nargs="+", choices=ALGORITHMS, default=list(ALGORITHMS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--trials", type=int, default=16, help="trials per sweep (tune.num_samples)")
    parser.add_argument("--steps", type=int, default=400, help="a trial's most steps (train.steps, ASHA's max_t)")
    parser.add_argument("--storage", default="~/raygan_results", help="a local folder for the sweeps")
    parser.add_argument(
        "--sweep-minutes", type=float, default=20, help="interrupt a sweep that runs longer (it fails; default 20)"
    )
    parser.add_argument("--out", help="also write the figures as JSON here")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object, last line")
    args = parser.parse_args()
    if "random" not in args.algorithms:
        print("error: --algorithms: random is the baseline the others are measured against", file=sys.stderr)
        return 2
    for key in ("seeds", "trials", "steps"):
        if getattr(args, key) < 1:
            print(f"error: --{key}: must be at least 1", file=sys.stderr)
            return 2
    storage = Path(args.storage).expanduser().resolve()
    storage.mkdir(parents=True, exist_ok=True)
    sweeps: dict[str, dict[int, dict]] = {algorithm: {} for algorithm in args.algorithms}
    runs = [(seed, algorithm) for seed in range(args.seeds) for algorithm in args.algorithms]
    started, failed = time.perf_counter(), []
    for count, (seed, algorithm) in enumerate(runs, 1):
        name = experiment_name(algorithm, seed, args.trials, args.steps)
        sweep = read_sweep(storage, name)
        if sweep is None:
            others = other_ray_instances()
            if others:  # checked before every sweep: the benchmark continues from here once it is gone
                print(
                    f"error: another Ray instance runs on this machine ({', '.join(others)}); stop it first: besides "
                    "skewing the timings, Ray Train's placement group cleaner cannot tell two instances apart, and "
                    "sweeps stalled with finished trials' CPUs never released",
                    file=sys.stderr,
                )
                return 1
            print(f"[{count}/{len(runs)}] {algorithm} seed {seed}: running {name} ...", flush=True)
            outcome = run_sweep(storage, name, algorithm, seed, args.trials, args.steps, args.sweep_minutes * 60)
            sweep = read_sweep(storage, name)
            if outcome["returncode"] != 0 or sweep is None:
                failed.append(name)
                code = outcome["returncode"]
                print(
                    f"    failed ({'exit ' if code != 'timeout' else ''}{code}); see {storage / (name + '.log')}",
                    flush=True,
                )
                if sweep is None:
                    continue
        else:
            print(f"[{count}/{len(runs)}] {algorithm} seed {seed}: already run ({storage / name})", flush=True)
        sweeps[algorithm][seed] = sweep
        elapsed = (time.perf_counter() - started) / 60
        print(
            f"    best FID {sweep['best_fid']:.3f}; {sweep['trials']} trials ({sweep['failed']} failed), "
            f"{sweep['trained_s']:.0f} s trained, {sweep['wall_s']:.0f} s wall; {elapsed:.1f} min so far",
            flush=True,
        )
    if not sweeps["random"]:
        print("error: no random search sweep finished: nothing to measure against", file=sys.stderr)
        return 1
    result = figures({algorithm: by_seed for algorithm, by_seed in sweeps.items() if by_seed})
    result.update(trials=args.trials, steps=args.steps, seeds=args.seeds, failed_sweeps=failed)
    result["sweeps"] = {
        f"{algorithm} seed {seed}": {key: value for key, value in sweep.items() if key != "evaluations"}
        for algorithm, by_seed in sweeps.items()
        for seed, sweep in by_seed.items()
    }
    print()
    print(table(result))
    print(
        f"compute: seconds of training summed over trials (start-up excluded); 'compute to reach' is the median "
        f"over seeds of what the sweep had spent when an evaluation first reached the target; "
        f"target met: <= {TARGET_FRACTION:.0%} of random's compute and a median best at least as good"
    )

    def clean(value):  # JSON has no inf: a never-reached target is null
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return None if isinstance(value, float) and not math.isfinite(value) else value

    if args.out:
        Path(args.out).write_text(json.dumps(clean(result), indent=2) + "\n")
    if args.json:
        print(json.dumps(clean(result)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
