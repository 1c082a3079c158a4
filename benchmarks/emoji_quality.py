"""Emoji: is a run's generator sharper than real emoji at half resolution, in the right category mix?

    .venv/bin/python -m raygan.cli train tune_configs/emoji.yaml --name emoji
    .venv/bin/python benchmarks/emoji_quality.py ~/raygan_results/emoji

Prints, all with the emoji feature network at the run's image size:
- the noise floor: FID between the real training split and emoji:test;
- the blur baselines: the training images downsampled to half (and a quarter) of the side and back up,
  against emoji:test;
- the run: FID of as many samples as the training split has (so it carries the same small-sample bias
  as the baselines) against emoji:test, and the KL divergence of the category histogram of 10,000
  samples (as the network reads them) from the real one;
- precision and recall (k = 5) against emoji:test, of the run's samples and of the training images (the
  floor's: what real images score);
- the health flags of the run's last evaluation.
Targets (issue #21): FID below the half-resolution blur baseline, category KL at most 0.05, no health
flag. Exit status 0 when met, 1 if not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys

TARGET_KL = 0.05


def npz_samples(path: str):
    """An .npz's `images` (uint8, N x 3 x H x W, as `raygan sample` writes them) in [-1, 1], at their own size."""
    import numpy as np
    import torch

    from raygan.errors import UserError

    try:
        images = torch.from_numpy(np.load(path)["images"])
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"{path}: not an .npz with uint8 `images` ({e})") from None
    return images.float() / 127.5 - 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "checkpoint", help="a run (its best checkpoint) or a checkpoint, local or s3://; or an .npz of samples"
    )
    parser.add_argument("--samples", type=int, default=10_000, help="samples for the category histogram")
    args = parser.parse_args()

    import torch

    from raygan import storage
    from raygan.checkpoint import load_generator
    from raygan.data import emoji
    from raygan.errors import UserError
    from raygan.images import generate
    from raygan.metrics.baselines import blur
    from raygan.metrics.evaluator import fixed_latents
    from raygan.metrics.features import load_extractor
    from raygan.metrics.fid import FeatureMetrics, extract, kl_divergence
    from raygan.metrics.prdc import evenly_spaced, prdc
    from raygan.report import load_run

    torch.set_num_threads(2)
    samples = None
    try:
        if args.checkpoint.endswith(".npz"):  # a peer's samples (benchmarks/plain_dcgan.py): no run to judge
            samples = npz_samples(args.checkpoint)
            size, data_name, meta = samples.shape[-1], "emoji", {"checkpoint": args.checkpoint}
        else:
            G, cfg, meta = load_generator(args.checkpoint)
            size, data_name = cfg.data.image_size, cfg.data.name
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if data_name != "emoji" or size not in (16, 32, 64):
        print(
            f"error: {meta['checkpoint']}: trained on {data_name} at {size}px; this check needs emoji",
            file=sys.stderr,
        )
        return 2
    extractor = load_extractor("emoji", 3)
    background = "white" if samples is not None else cfg.data.background
    train, test = emoji("train", size, background), emoji("test", size, background)
    test_features = extract(extractor, test.images)[0]

    def fid(images: torch.Tensor) -> float:
        metrics = FeatureMetrics(extractor.num_features)
        metrics.add_real(test_features)
        metrics.add_fake(extract(extractor, images)[0])
        return metrics.compute(len(test_features), len(images))["fid"]

    def precision_recall(images: torch.Tensor) -> str:
        """Against emoji:test, as many images as it has (PRDC takes equal counts)."""
        found = prdc(test_features, evenly_spaced(extract(extractor, images)[0], len(test_features)))
        return f"precision {found['precision']:.3f}, recall {found['recall']:.3f}"

    if samples is None:
        z, labels = fixed_latents(cfg, meta["num_classes"], max(args.samples, len(train)))
        samples = generate(G, z, labels)
    if len(samples) < len(train):
        print(f"error: {args.checkpoint}: {len(samples)} samples; this check needs {len(train)}", file=sys.stderr)
        return 2
    floor, half, quarter = fid(train.images), fid(blur(train.images, size // 2)), fid(blur(train.images, size // 4))
    run = fid(samples[: len(train)])
    classes = extract(extractor, samples[: args.samples])[1]
    fake_hist = torch.bincount(classes, minlength=9).double()
    real_hist = torch.bincount(train.labels, minlength=9).double()
    category_kl = kl_divergence(fake_hist, real_hist / real_hist.sum())
    run_folder = storage.parent(meta["checkpoint"])  # checkpoints sit in their run folder
    evaluations = [] if args.checkpoint.endswith(".npz") else load_run([run_folder], "run").evaluations
    last = evaluations[-1] if evaluations else {}
    flags = sorted(k[len("health_") :] for k, v in last.items() if k.startswith("health_") and v)
    n = len(train)
    print(f"checkpoint: {meta['checkpoint']} (step {meta.get('step', '?')}, {size}x{size})")
    print(f"noise floor:          FID {floor:8.3f}  ({n} training images vs {len(test)} emoji:test)")
    print(f"blur baseline ({size // 2:>2}px): FID {half:8.3f}  (the training images at half resolution)")
    print(f"blur baseline ({size // 4:>2}px): FID {quarter:8.3f}  (a quarter)")
    print(f"run:                  FID {run:8.3f}  ({n} samples), {run / half:.2f}x the half-resolution baseline")
    print(f"against emoji:test:   run {precision_recall(samples[:n])}; real {precision_recall(train.images)}")
    print(
        f"categories: KL {category_kl:.4f} from the real mix over {args.samples:,} samples; "
        "generated / real %: "
        + ", ".join(
            f"{100 * g / fake_hist.sum():.1f}/{100 * r / real_hist.sum():.1f}"
            for g, r in zip(fake_hist.tolist(), real_hist.tolist())
        )
    )
    if evaluations:
        print(f"health at the last evaluation (step {last['step']}): {', '.join(flags) or 'no flags'}")
    else:
        print(f"health: {args.checkpoint} has no evaluation records (not a raygan train run), so it cannot be judged")
    met = run < half and category_kl <= TARGET_KL and bool(evaluations) and not flags
    print(
        f"targets: FID below the {size // 2}px blur baseline, category KL <= {TARGET_KL}, no health flag: "
        f"{'met' if met else 'NOT met'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
