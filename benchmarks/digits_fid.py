"""Unconditional digits: how close is a run's FID to digits:test to the metric's noise floor?
The floor is the FID between the real training split and digits:test (digits features); the run is
scored on as many samples as the training split has, so both sides carry the same small-sample bias.

    .venv/bin/python -m raygan.cli train tune_configs/digits_fid.yaml --name digits_fid
    .venv/bin/python benchmarks/digits_fid.py ~/raygan_results/digits_fid

Target (issue #8): FID at most 3x the floor. Exit status 0 when met, 1 if not.
"""

from __future__ import annotations

import argparse
import sys

TARGET_RATIO = 3.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a run (its best checkpoint) or a checkpoint, local or s3://")
    args = parser.parse_args()

    import torch

    from raygan.compare import fid_between
    from raygan.data import dataset_from_spec

    torch.set_num_threads(2)
    train_size = len(dataset_from_spec("digits", 8))
    floor = fid_between("digits:test", "digits")
    run = fid_between("digits:test", args.checkpoint, num=train_size)
    ratio = run["fid"] / floor["fid"]
    print(f"noise floor: FID {floor['fid']:.3f}  ({floor['fake']} vs {floor['real']})")
    print(f"run:         FID {run['fid']:.3f}  ({run['fake']} vs {run['real']}), KID {run['kid']:.4f}")
    met = ratio <= TARGET_RATIO
    print(f"ratio {ratio:.2f}x the floor (target <= {TARGET_RATIO:.0f}x): {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
