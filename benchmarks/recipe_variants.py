"""Variants of a recipe trained side by side on one device, without Ray, each in its own process (with
`--device cuda` they share a lent GPU; not yet run on one). Every `--check-every` steps each variant's
EMA generator (BatchNorm statistics recomputed, as raygan does before it evaluates) is judged by its
recipe's check: stacked digits by the modes and KL of 10,000 samples (benchmarks/stacked_modes.py),
digits by FID to digits:test on as many samples as the training split against the noise floor
(benchmarks/digits_fid.py), emoji by FID to emoji:test against the half-resolution blur baseline and
the category KL (benchmarks/emoji_quality.py). A variant trains until `--steps` or until `--minutes` have passed.

    python benchmarks/recipe_variants.py tune_configs/stacked_modes.yaml --device cuda --minutes 8 \\
        --variant recipe --variant pack4 model.pack=4 --variant hinge loss.name=hinge [--out rows.jsonl] [--save DIR]

This finds which settings help per step; what a step costs on 2 CPU cores (the recipes' budget) is
measured separately, with `--device cpu --threads 2`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
STACKED_SAMPLES = 10_000


def digits_check():
    """engine -> FID to digits:test of as many samples as the training split, and its ratio to the floor."""
    from raygan.compare import image_metrics, load_images
    from raygan.data import dataset_from_spec
    from raygan.metrics.evaluator import fixed_latents
    from raygan.metrics.label_check import legibility

    test, _ = load_images("digits:test", None, 32)
    train, _ = load_images("digits", None, 32)
    floor = image_metrics(test, train)["fid"]
    n = len(dataset_from_spec("digits", 8))

    def check(engine) -> dict:
        z, labels = fixed_latents(engine.cfg, engine.num_classes, n)
        images = engine.generate(z, labels)
        fid = image_metrics(test, images)["fid"]
        return {"fid": round(fid, 4), "ratio": round(fid / floor, 2), "legibility": round(legibility(images)[0], 3)}

    return check


def stacked_check():
    """engine -> modes of 10,000 samples (of 1,000) and their KL from uniform."""
    from raygan.metrics.label_check import mode_coverage

    def check(engine) -> dict:
        r = mode_coverage(engine.sampler, STACKED_SAMPLES, device=engine.device)
        return {
            "modes": r["modes_covered"],
            "kl": round(r["mode_kl"], 4),
            "legibility": [round(x, 3) for x in r["legibility"]],
        }

    return check


def emoji_check():
    """engine -> FID to emoji:test of as many samples as the training split, its ratio to the half-resolution
    blur baseline (benchmarks/emoji_quality.py; below 1 beats it), and the category KL of those samples."""
    import torch

    from raygan.data import emoji
    from raygan.metrics.baselines import blur
    from raygan.metrics.evaluator import fixed_latents
    from raygan.metrics.features import load_extractor
    from raygan.metrics.fid import FeatureMetrics, extract, kl_divergence

    extractor = load_extractor("emoji", 3)
    state = {}

    def fid(features: torch.Tensor) -> float:
        metrics = FeatureMetrics(extractor.num_features)
        metrics.add_real(state["test"])
        metrics.add_fake(features)
        return metrics.compute(len(state["test"]), len(features))["fid"]

    def check(engine) -> dict:
        size = engine.cfg.data.image_size
        if not state:  # emoji:test's features once, not at every check
            train, test = emoji("train", size), emoji("test", size)
            state.update(
                test=extract(extractor, test.images)[0],
                n=len(train),
                real_mix=torch.bincount(train.labels, minlength=9) / len(train),
            )
            state["baseline"] = fid(extract(extractor, blur(train.images, size // 2))[0])
        z, labels = fixed_latents(engine.cfg, engine.num_classes, state["n"])
        features, classes = extract(extractor, engine.generate(z, labels))  # one pass gives both
        fid_value = fid(features)
        kl = kl_divergence(torch.bincount(classes, minlength=9), state["real_mix"].double())
        return {"fid": round(fid_value, 3), "ratio": round(fid_value / state["baseline"], 3), "kl": round(kl, 4)}

    return check


CHECKS = {"digits": digits_check, "stacked-digits": stacked_check, "emoji": emoji_check}


def train_variant(name: str, config: str, overrides: list[str], args: argparse.Namespace, results) -> None:
    import torch

    from raygan.checkpoint import checkpoint_name, write_checkpoint
    from raygan.config import load_config
    from raygan.data import indexed_batches, load_dataset
    from raygan.train.step import GANEngine

    torch.set_num_threads(args.threads)
    cfg = load_config(config, overrides)
    steps = args.steps or cfg.train.steps
    dataset = load_dataset(cfg.data, seed=cfg.seed)
    batches = indexed_batches(dataset, cfg.train.batch_size, cfg.seed)
    engine = GANEngine(cfg, dataset.channels, dataset.num_classes, args.device)
    check = CHECKS[cfg.data.name]()
    deadline = time.monotonic() + args.minutes * 60
    start, training_s = time.monotonic(), 0.0
    while engine.step < steps:
        step_start = time.monotonic()
        engine.train_step([batches(engine.step * cfg.train.n_critic + i) for i in range(cfg.train.n_critic)])
        training_s += time.monotonic() - step_start
        out_of_time = time.monotonic() > deadline
        if engine.step % args.check_every and engine.step < steps and not out_of_time:
            continue
        engine.pop_metrics()
        engine.recalibrate_sampler()
        row = {
            "variant": name,
            "overrides": overrides,
            "step": engine.step,
            **check(engine),
            "s_per_step": round(training_s / engine.step, 4),
            "wall_s": round(time.monotonic() - start),
        }
        if args.save:  # a raygan checkpoint: benchmarks/stacked_modes.py and digits_fid.py read it
            write_checkpoint(Path(args.save) / name / checkpoint_name(engine.step), engine, cfg, row)
        results.put(row)
        if out_of_time:
            break


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the recipe, a raygan train config")
    parser.add_argument(
        "--variant",
        nargs="+",
        action="append",
        required=True,
        metavar=("NAME", "OVERRIDE"),
        help="a name and the dotted-key overrides that make it (none: the recipe)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per variant")
    parser.add_argument("--steps", type=int, help="default: the recipe's train.steps")
    parser.add_argument("--check-every", type=int, default=2000)
    parser.add_argument("--minutes", type=float, default=60.0, help="each variant stops after this long")
    parser.add_argument("--out", help="append the rows, one JSON object per line, to this file")
    parser.add_argument("--save", metavar="DIR", help="write a checkpoint at every check to DIR/VARIANT/")
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [
        context.Process(target=train_variant, args=(name, args.config, overrides, args, results))
        for name, *overrides in args.variant
    ]
    for p in processes:
        p.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` stops the variants too
    try:
        report(processes, results, args.out)
    finally:
        for p in processes:
            p.terminate()
    return max(abs(p.exitcode or 0) for p in processes)


def report(processes, results, out) -> None:
    """Print and append each row as the variants send them, until all have ended."""
    print(f"{'variant':<24} {'step':>6} {'figures':<56} {'s/step':>7} {'wall s':>7}", flush=True)
    while any(p.is_alive() for p in processes) or not results.empty():
        try:
            row = results.get(timeout=1)
        except queue.Empty:  # a variant that died shows as missing rows and a non-zero exit status
            continue
        figures = ", ".join(f"{k} {row[k]}" for k in ("modes", "kl", "fid", "ratio", "legibility") if k in row)
        line = f"{row['variant']:<24} {row['step']:>6} {figures:<56} {row['s_per_step']:>7} {row['wall_s']:>7}"
        print(line, flush=True)
        if out:
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
