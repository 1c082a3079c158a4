"""A sweep under chaos (issue #31): while `python -m raygan.tune` runs a sweep of tiny trials, a helper thread
kills a random Ray Train worker (SIGKILL, by PID) every so often, a bounded and seeded number of times.
Every trial must still finish, each counted once, and the sweep's best checkpoint must load. Prints the
sweep's wall time with the faults and without them (the same sweep, run first).

    .venv/bin/python benchmarks/chaos_sweep.py            # 8 trials of 200 steps, 4 kills: about 7 minutes on 2 cores
    .venv/bin/python benchmarks/chaos_sweep.py --trials 8 --steps 60 --kills 3 --every 8 --no-baseline --json

The sweep: 8x8 digits, the digits recipe's nets made small, two trials at a time of one Train worker (1 CPU)
each, FIFO, random search over both learning rates; a checkpoint every quarter of the steps, and
`train.max_failures` equal to the kills, so that no run gives up. The workers are the `ray::RayTrainWorker`
processes below the sweep's driver, which starts its own Ray (RAY_ADDRESS=local): nothing else on the machine
is touched. The first kill waits for a worker to exist and the first --every seconds; later ones come
every 0.5-1.5 x --every seconds (seeded), at a worker chosen at random (seeded) among those that have
run for --min-age seconds (younger ones are still starting: killing them costs a restart, no training).
A kill loses the steps since that run's last checkpoint; Ray Train restarts its worker group, which resumes
from it.

Checked, with the faults: exit 0; summary.json has every trial once, each `completed` at the last step;
one run folder per trial; each trial's best checkpoint is complete and the sweep's best loads.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import ray  # noqa: F401  first: it puts the psutil it vendors on sys.path (nothing here calls ray.init)

# isort: split
import psutil

ROOT = Path(__file__).resolve().parent.parent
WORKER = "ray::RayTrainWorker"


def sweep_config(trials: int, steps: int, kills: int, seed: int) -> dict:
    quarter = max(steps // 4, 1)
    return {
        "seed": seed,
        "data": {"name": "digits", "image_size": 8},
        "model": {"latent_dim": 32, "g_layers": 3, "d_layers": 3, "g_width": 32, "d_width": 32},
        "train": {
            "batch_size": 64,
            "steps": steps,
            "eval_every": 2 * quarter,
            "checkpoint_every": quarter,  # a kill loses at most a quarter of a run
            "report_every": quarter,
            "keep_checkpoints": 2,
            "max_failures": kills,  # Ray Train restarts a run's workers this often: never runs out here
        },
        "eval": {"num_samples": 500},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1},
        "tune": {
            "num_samples": trials,
            "max_concurrent": 2,
            "scheduler": {"name": "fifo"},
            "search_alg": {"name": "random"},
            "search_space": {
                "optim.g.lr": {"loguniform": [1.0e-4, 1.0e-3]},
                "optim.d.lr": {"loguniform": [1.0e-4, 1.0e-3]},
            },
        },
    }


def train_workers(driver_pid: int, min_age_s: float) -> list[int]:
    """PIDs of the Ray Train workers of the Ray this driver started that have run for `min_age_s` or more
    (a younger one is still starting: killing it costs a restart but no training)."""
    found = []
    try:
        below = psutil.Process(driver_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for process in below:
        try:
            if " ".join(process.cmdline()).startswith(WORKER) and time.time() - process.create_time() >= min_age_s:
                found.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # gone since the walk
            pass
    return sorted(found)


@dataclass
class Chaos:
    kills: int  # Train workers killed, at most (0: a calm sweep)
    every_s: float  # between kills, on average
    min_age_s: float  # how long a worker has run before it may be killed
    seed: int


def unleash(chaos: Chaos, driver: subprocess.Popen, started: float, done: list) -> None:
    """Kill a random Train worker of `driver`'s sweep, at most `kills` times, about every `every_s` seconds;
    each kill (when, which PID, how many workers were eligible) goes into `done`."""
    rng = random.Random(chaos.seed)
    due = started + chaos.every_s
    while driver.poll() is None and len(done) < chaos.kills:
        time.sleep(0.2)
        if time.monotonic() < due:
            continue
        workers = train_workers(driver.pid, chaos.min_age_s)
        if not workers:
            continue
        victim = rng.choice(workers)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:  # ended on its own since the walk: choose again
            continue
        done.append({"at_s": round(time.monotonic() - started, 1), "pid": victim, "eligible": len(workers)})
        due = time.monotonic() + chaos.every_s * rng.uniform(0.5, 1.5)


def run_sweep(storage: Path, name: str, config: dict, chaos: Chaos) -> dict:
    """The sweep as a user runs it, with `chaos`; its figures, checked."""
    config_file = storage / f"{name}.yaml"
    config_file.write_text(json.dumps(config))  # JSON is YAML
    command = [sys.executable, "-m", "raygan.tune", str(config_file), "--name", name, "--storage", str(storage)]
    log = storage / f"{name}.log"
    done: list[dict] = []
    with open(log, "w") as out:
        started = time.monotonic()
        own_ray = {**os.environ, "RAY_ADDRESS": "local"}  # never a cluster `ray start` left running here
        driver = subprocess.Popen([*command, "--json"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=own_ray)
        killer = threading.Thread(target=unleash, args=(chaos, driver, started, done), daemon=True)
        killer.start()
        code = driver.wait()
        wall = time.monotonic() - started
        killer.join()
    output = log.read_text(errors="replace")
    if code != 0:
        raise SystemExit(f"the sweep {name} failed (exit {code}); its log: {log}\n{output[-3000:]}")
    return {"wall_s": round(wall, 1), "kills": done, **check(storage / name, config, output)}


def check(experiment: Path, config: dict, output: str) -> dict:
    """What the sweep left: every trial once and completed at its last step, one run folder each, complete
    best checkpoints, and a best that loads."""
    from raygan.checkpoint import is_complete, load_generator
    from raygan.tune.summary import RUNS, read_summary

    rows = read_summary(str(experiment)) or []
    steps = config["train"]["steps"]
    summary = json.loads(output.strip().splitlines()[-1])
    without_best = [r["trial"] for r in rows if not (r["best_checkpoint"] and is_complete(r["best_checkpoint"]))]
    load_generator(summary["best_checkpoint"])  # raises if it does not load
    return {
        "trials": summary["trials"],
        "unique_trials": len({row["trial"] for row in rows}),
        "completed": sum(row["stop_reason"] == "completed" and row["last_step"] == steps for row in rows),
        "run_folders": len(list((experiment / RUNS).iterdir())),
        "trials_without_complete_best": without_best,
        "best_checkpoint_loads": True,
        "best_fid": summary["best_fid"],
        "resumes": len(re.findall(r"resumed from step \d+", output)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--kills", type=int, default=4, help="Train workers killed, at most")
    parser.add_argument("--every", type=float, default=20.0, help="seconds between kills, on average")
    parser.add_argument("--min-age", type=float, default=10.0, help="seconds a worker runs before it may be killed")
    parser.add_argument("--seed", type=int, default=0, help="the sweep's seed, and the chaos's")
    parser.add_argument("--no-baseline", action="store_true", help="only the sweep with faults")
    parser.add_argument("--out", help="storage folder (default: a temporary one, removed)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON, last")
    args = parser.parse_args()
    config = sweep_config(args.trials, args.steps, args.kills, args.seed)
    with tempfile.TemporaryDirectory(prefix="raygan-chaos-") as temporary:
        storage = Path(args.out or temporary).resolve()
        storage.mkdir(parents=True, exist_ok=True)
        figures = {}
        if not args.no_baseline:
            figures["baseline"] = run_sweep(storage, "calm", config, Chaos(0, args.every, args.min_age, args.seed))
        figures["faults"] = run_sweep(storage, "chaos", config, Chaos(args.kills, args.every, args.min_age, args.seed))
    for label, f in figures.items():
        print(
            f"{label}: {f['trials']} trials in {f['wall_s']:.0f} s, {len(f['kills'])} workers killed, "
            f"{f['resumes']} resumes; {f['completed']} completed, best FID {f['best_fid']:.2f}"
        )
    if "baseline" in figures:
        extra = figures["faults"]["wall_s"] - figures["baseline"]["wall_s"]
        print(f"the faults cost {extra:.0f} s ({extra / figures['baseline']['wall_s']:+.0%} wall time)")
    if args.json:
        print(json.dumps(figures))
    broken = [label for label, f in figures.items() if not holds(f, args.trials)]
    if broken:
        raise SystemExit(
            f"not every trial finished once with complete best checkpoints: {', '.join(broken)}\n"
            + json.dumps({label: figures[label] for label in broken})
        )


def holds(figures: dict, trials: int) -> bool:
    """Every trial once, completed at its last step, in one run folder, its best checkpoint complete."""
    counts = ("trials", "unique_trials", "completed", "run_folders")
    return all(figures[key] == trials for key in counts) and not figures["trials_without_complete_best"]


if __name__ == "__main__":
    main()
