"""raygan's training step against the loop a user writes by hand, data-parallel scaling, evaluation
speed, and where a `raygan train` run's time goes. One command (about 20 minutes on 2 cores):

    .venv/bin/python benchmarks/throughput.py [--rounds 2] [--models dcgan64 digits32] [--out FILE.json]

For each model, the variants run in turns, round after round (A B C D E A B C D E ...), so machine
drift falls on all of them alike; each figure is the median step time of a run, then the median over rounds:
  plain       the loop below doing raygan's step with nothing around it, 2 threads, batch 64, own process
  examples    pytorch/examples' DCGAN loop as written (contiguous tensors, D's weight gradients in G's step)
  raygan 1x2  the `raygan bench` code path: 1 Ray Train worker of 2 CPUs, batch 64
  raygan 1x1  1 worker of 1 CPU, batch 64
  raygan 2x1  2 workers of 1 CPU each (DDP), batch 128: 64 per worker, as 1x1
Targets: 1x2 >= 0.97x plain; 2x1 >= 1.8x 1x1. Then: FLOPs per step (torch's counter) against the
machine's fp32 matmul rate; FID/KID on 10,000 generated samples with cached real statistics (target
<= 5 s); and one `raygan train` run of the default model, as users start it, for the time from launch
to the first step and the share of the training loop spent outside steps and evaluations (target <= 10%).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
MODELS = {  # name -> (config, steps timed per run)
    "dcgan64": (ROOT / "benchmarks" / "dcgan64.yaml", 10),  # pytorch/examples DCGAN, 64x64x3 noise
    "digits32": (ROOT / "tune_configs" / "default.yaml", 60),  # the default sweep's model
}
EVAL_SAMPLES = 10_000


# -- the reference: a plain PyTorch loop ------------------------------------------------------------


def plain_loop(config: Path, steps: int, threads: int, textbook: bool = False) -> float:
    """A hand-written loop on the same model and data; median seconds per step.

    By default it does what raygan's step does, with nothing around it: D on real and fake, then G
    through a frozen D, in the config's memory format. `textbook` is pytorch/examples' loop as
    written: contiguous tensors, and G's step also computes gradients of D's weights (then drops them).
    """
    from raygan.config import load_config
    from raygan.data import load_dataset
    from raygan.models import build_discriminator, build_generator
    from raygan.train.bench import BENCH_WARMUP_S, BENCH_WARMUP_STEPS

    torch.set_num_threads(threads)
    cfg = load_config(config)
    memory_format = torch.channels_last if cfg.train.channels_last and not textbook else torch.contiguous_format
    data = load_dataset(cfg.data).images.contiguous(memory_format=memory_format)
    torch.manual_seed(0)
    G = build_generator(cfg, data.shape[1], 10).to(memory_format=memory_format)
    D = build_discriminator(cfg, data.shape[1], 10).to(memory_format=memory_format)
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = torch.nn.BCEWithLogitsLoss()
    batch = cfg.train.batch_size
    ones, zeros = torch.ones(batch), torch.zeros(batch)

    def step() -> float:
        start = time.perf_counter()
        real = data[torch.randint(len(data), (batch,))]
        opt_D.zero_grad()
        fake = G(torch.randn(batch, cfg.model.latent_dim))
        loss_D = bce(D(real), ones) + bce(D(fake.detach()), zeros)
        loss_D.backward()
        opt_D.step()
        opt_G.zero_grad()
        D.requires_grad_(textbook)
        bce(D(fake), ones).backward()
        D.requires_grad_(True)
        opt_G.step()
        return time.perf_counter() - start

    warm_up, began = 0, time.perf_counter()
    while warm_up < BENCH_WARMUP_STEPS or time.perf_counter() - began < BENCH_WARMUP_S:  # as raygan bench
        step()
        warm_up += 1
    times = [step() for _ in range(steps)]
    return statistics.median(times)


def step_flops(config: Path) -> float:
    """FLOPs of raygan's training step: D on real and fake, G through a frozen D, forward and backward."""
    from torch.utils.flop_counter import FlopCounterMode

    from raygan.config import load_config
    from raygan.data import load_dataset
    from raygan.models import build_discriminator, build_generator

    cfg = load_config(config)
    channels = load_dataset(cfg.data).channels
    G, D = build_generator(cfg, channels, 10), build_discriminator(cfg, channels, 10)
    batch, size = cfg.train.batch_size, cfg.data.image_size
    with FlopCounterMode(display=False) as counter:
        fake = G(torch.randn(batch, cfg.model.latent_dim))
        (D(torch.randn(batch, channels, size, size)).sum() + D(fake.detach()).sum()).backward()
        D.requires_grad_(False)
        D(fake).sum().backward()
    return float(counter.get_total_flops())


def matmul_rate(threads: int, n: int = 1024, repeats: int = 20) -> float:
    """fp32 FLOP/s of an n x n matmul on `threads` threads (best of `repeats`)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def eval_speed() -> dict:
    """FID/KID of the default model's G on 10,000 samples: first (real statistics computed) and cached."""
    from raygan.config import load_config
    from raygan.metrics.evaluator import Evaluator
    from raygan.train.step import GANEngine

    torch.set_num_threads(2)
    cfg = load_config(MODELS["digits32"][0], [f"eval.num_samples={EVAL_SAMPLES}"])
    engine = GANEngine(cfg, channels=1, num_classes=10)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        Evaluator(cfg, 1, 10, rank=0, world_size=1, storage_root=cache)
        computing = time.perf_counter() - start
        start = time.perf_counter()
        evaluate = Evaluator(cfg, 1, 10, rank=0, world_size=1, storage_root=cache)
        cached = time.perf_counter() - start
        assert not evaluate.real_computed, "the second evaluator must read the cache"
        times = []
        for _ in range(3):
            start = time.perf_counter()
            metrics = evaluate(engine)
            times.append(time.perf_counter() - start)
    return {
        "eval_s": statistics.median(times),
        "real_stats_first_s": computing,
        "real_stats_cached_s": cached,
        "samples": EVAL_SAMPLES,
        "fid_untrained": metrics["fid"],
    }


# -- raygan, through the bench code path ------------------------------------------------------------


def raygan_bench(config: Path, steps: int, workers: int, cpus: int, per_worker_batch: int) -> dict:
    from raygan.config import load_config
    from raygan.train.bench import bench

    cfg = load_config(
        config,
        [
            f"scaling.num_workers={workers}",
            f"scaling.cpus_per_worker={cpus}",
            f"train.batch_size={per_worker_batch * workers}",
        ],
    )
    with tempfile.TemporaryDirectory(prefix="raygan-bench-") as storage:
        return bench(cfg, steps, storage, name="bench")


def child(*args: str) -> dict:
    """Run this file as a subprocess (its own process, thread settings and allocator); its JSON result."""
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def train_run(storage: str) -> dict:
    """`raygan train` on the default model as a user starts it (its own Ray): time split and startup."""
    config = MODELS["digits32"][0]
    args = [
        "train",
        str(config),
        "--storage",
        storage,
        "--name",
        "bench-run",
        "--set",
        "train.steps=600",
        "--set",
        "scaling.cpus_per_worker=2",
        "--json",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    start = time.time()
    out = subprocess.run([sys.executable, "-m", "raygan.cli", *args], capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    line = next(line for line in out.stdout.splitlines() if line.startswith("time: "))
    return {"wall_s": time.time() - start, "timing_line": line}


# -- the comparison ---------------------------------------------------------------------------------


def compare(models: list[str], rounds: int) -> dict:
    import ray

    variants = {  # name -> (workers, cpus per worker), or the plain loop's flags (its own process)
        "plain": [],
        "examples": ["--textbook"],
        "raygan 1x2": (1, 2),
        "raygan 1x1": (1, 1),
        "raygan 2x1": (2, 1),
    }
    results: dict = {}
    ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False)
    try:
        for model in models:
            config, steps = MODELS[model]
            batch = 64
            runs: dict[str, list[dict]] = {name: [] for name in variants}
            for r in range(rounds):
                for name, shape in variants.items():
                    if isinstance(shape, list):
                        step_s = child("--plain", str(config), "--steps", str(steps), "--threads", "2", *shape)[
                            "step_s"
                        ]
                        runs[name].append({"step_s": step_s, "images_per_s": batch / step_s, "workers": 1})
                    else:
                        runs[name].append(raygan_bench(config, steps, *shape, per_worker_batch=batch))
                    last = runs[name][-1]
                    print(f"  {model} round {r + 1}: {name:<11} {last['images_per_s']:8.1f} images/s", flush=True)
            median = {name: statistics.median(run["images_per_s"] for run in rs) for name, rs in runs.items()}
            results[model] = {
                "images_per_s": median,
                "single_vs_plain": median["raygan 1x2"] / median["plain"],
                "two_workers_vs_one": median["raygan 2x1"] / median["raygan 1x1"],
                "startup_s": statistics.median(
                    run["startup_s"] for rs in runs.values() for run in rs if "startup_s" in run
                ),
                "params": (runs["raygan 1x1"][0]["params_G"], runs["raygan 1x1"][0]["params_D"]),
            }
    finally:
        ray.shutdown()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--out", help="also write the figures to this JSON file")
    parser.add_argument("--skip-train", action="store_true", help="leave out the `raygan train` run")
    parser.add_argument("--plain", help=argparse.SUPPRESS)  # child: the reference loop on this config
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--textbook", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rates", action="store_true", help=argparse.SUPPRESS)  # child: FLOPs and matmul
    parser.add_argument("--eval", action="store_true", help=argparse.SUPPRESS)  # child: evaluation speed
    args = parser.parse_args()
    if args.plain:
        print(json.dumps({"step_s": plain_loop(Path(args.plain), args.steps, args.threads, args.textbook)}))
        return
    if args.rates:
        flops = {model: step_flops(config) for model, (config, _) in MODELS.items()}
        print(json.dumps({"flops": flops, "matmul_1t": matmul_rate(1), "matmul_2t": matmul_rate(2)}))
        return
    if args.eval:
        print(json.dumps(eval_speed()))
        return

    started = time.time()
    figures: dict = {"machine": f"{os.cpu_count()} CPUs, torch {torch.__version__}"}
    if not args.skip_train:
        print("raygan train (default model, 600 steps, its own Ray) ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="raygan-bench-run-") as storage:
            figures["train"] = train_run(storage)
        print(f"  {figures['train']['timing_line']}", flush=True)
    print("evaluation speed ...", flush=True)
    figures["eval"] = child("--eval")
    figures["rates"] = child("--rates")
    print(f"throughput, {args.rounds} rounds ...", flush=True)
    figures["models"] = compare(args.models, args.rounds)
    print_table(figures)
    print(f"(benchmark took {(time.time() - started) / 60:.1f} min)")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2))


def print_table(f: dict) -> None:
    rates = f["rates"]
    print(
        f"\nmachine: {f['machine']}; fp32 matmul {rates['matmul_1t'] / 1e9:.0f} GFLOP/s on 1 thread, "
        f"{rates['matmul_2t'] / 1e9:.0f} on 2"
    )
    header = (
        f"{'model':<9} {'examples':>8} {'plain':>7} {'1x2':>7} {'1x2/plain':>9} {'1x1':>7} {'2x1':>7} "
        f"{'2x1/1x1':>8} {'plain % matmul':>14}"
    )
    print(header + "\n" + "-" * len(header))
    for model, m in f["models"].items():
        ips = m["images_per_s"]
        plain_rate = rates["flops"][model] * ips["plain"] / 64 / rates["matmul_2t"]
        print(
            f"{model:<9} {ips['examples']:8.1f} {ips['plain']:7.1f} {ips['raygan 1x2']:7.1f} "
            f"{m['single_vs_plain']:8.3f}x {ips['raygan 1x1']:7.1f} {ips['raygan 2x1']:7.1f} "
            f"{m['two_workers_vs_one']:7.2f}x {100 * plain_rate:13.0f}%"
        )
    print(
        "images/s; examples = pytorch/examples' loop; 1x2 = 1 worker of 2 CPUs; 2x1 = 2 workers of 1 CPU "
        "(64 images per worker per step)"
    )
    print("targets: 1x2/plain >= 0.97, 2x1/1x1 >= 1.8")
    for model, m in f["models"].items():
        print(
            f"{model}: {rates['flops'][model] / 1e9:.2f} GFLOP per step; G {m['params'][0]:,} / D {m['params'][1]:,} "
            f"parameters; bench start to first step {m['startup_s']:.1f} s (Ray already up)"
        )
    e = f["eval"]
    print(
        f"evaluation: FID/KID on {e['samples']:,} samples {e['eval_s']:.2f} s (target <= 5 s); real statistics "
        f"{e['real_stats_first_s']:.2f} s the first time, {e['real_stats_cached_s']:.2f} s from the cache"
    )
    if "train" in f:
        print(f"raygan train, 600 steps, wall {f['train']['wall_s']:.0f} s: {f['train']['timing_line']}")


if __name__ == "__main__":
    main()
