"""Conditional digits: is each sample recognised as the label it was drawn for? Per-class accuracy of a
run's best checkpoint (or any checkpoint), judged by an independent classifier (see raygan.metrics.label_check).

    .venv/bin/python -m raygan.cli train tune_configs/cgan.yaml --set train.ema=0.999 --name cgan
    .venv/bin/python benchmarks/digits_cgan.py ~/raygan_results/cgan [--per-class 1000]

Targets (issue #8): at least 95% overall and at least 90% for every class. Exit status 0 when met, 1 if not.
It also prints how varied the samples of one label are, beside the same figure for the real test digits.
"""

from __future__ import annotations

import argparse
import sys

TARGET_OVERALL, TARGET_CLASS = 0.95, 0.90


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a run (its best checkpoint) or a checkpoint, local or s3://")
    parser.add_argument("--per-class", type=int, default=1000, help="samples drawn per label")
    args = parser.parse_args()

    import torch

    from raygan.checkpoint import load_generator
    from raygan.metrics.label_check import DigitClassifier, label_accuracy, real_spread

    torch.set_num_threads(2)
    classifier = DigitClassifier.fit()
    G, cfg, meta = load_generator(args.checkpoint)
    if not cfg.model.conditional:
        print(f"error: {meta['checkpoint']}: not a conditional model", file=sys.stderr)
        return 2
    result = label_accuracy(G, classifier, args.per_class, meta["num_classes"])
    print(f"checkpoint: {meta['checkpoint']} (step {meta.get('step')}, FID {meta.get('fid') or float('nan'):.3f})")
    print(f"judge: SVC on the 8x8 training digits, {100 * classifier.test_accuracy:.1f}% on digits:test")
    print("label     " + " ".join(f"{k:>5}" for k in range(len(result["per_class"]))))
    print("accuracy  " + " ".join(f"{100 * a:5.1f}" for a in result["per_class"]))
    met = result["accuracy"] >= TARGET_OVERALL and min(result["per_class"]) >= TARGET_CLASS
    print(
        f"overall {100 * result['accuracy']:.1f}% of {args.per_class * len(result['per_class']):,} samples; "
        f"worst class {result['worst_class']} at {100 * min(result['per_class']):.1f}% "
        f"(targets: >= {100 * TARGET_OVERALL:.0f}% overall, >= {100 * TARGET_CLASS:.0f}% per class): "
        f"{'met' if met else 'NOT met'}"
    )
    print(
        f"within-label spread {result['spread']:.3f} (real digits:test {real_spread():.3f}): the RMS pixel "
        "difference between two samples of one label, 8x8 as the judge sees them; 0 for a G that ignores z"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
