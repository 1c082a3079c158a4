"""`raygan fid`: FID/KID/MiFID and precision/recall/density/coverage between two image sources.

    fid_between("digits", "digits:test")                        # the metric's noise floor on digits
    fid_between("emoji", "emoji:test")                          # ... on emoji (their own feature network)
    fid_between("digits:test", "~/raygan_results/run1", num=2000)  # a run's best checkpoint

A SPEC is a built-in dataset (`digits`, `digits:test`, `stacked-digits[:test]`, `emoji[:test]`), a folder
of images, an .npz with `images`, or a checkpoint / run folder to sample from (fixed latents). Without
`features` the feature network is the checkpoint's `eval.features`, `emoji` for emoji, else `digits`.
Precision, recall, density and coverage use up to 2,000 images of each side, as many of each (picked
evenly, so fixed).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch

from raygan.checkpoint import is_checkpoint_or_run
from raygan.errors import ConfigError, UserError
from raygan.metrics.evaluator import fixed_latents
from raygan.metrics.features import load_extractor
from raygan.metrics.fid import FeatureMetrics, extract
from raygan.metrics.prdc import KEYS as PRDC_KEYS
from raygan.metrics.prdc import NEAREST_K, PRDC_SAMPLES, evenly_spaced, prdc

BUILTIN = ("digits", "stacked-digits", "emoji")
DEFAULT_FAKE_SAMPLES = 2000
DEFAULT_SIZE = 32


def load_images(spec: str, num: int | None, image_size: int | None) -> tuple[torch.Tensor, str]:
    """(images in [-1, 1], a description) for SPEC; UserError naming SPEC when it cannot be read."""
    from raygan.config import DataConfig
    from raygan.data import dataset_from_spec, npz_images, read_folder

    name = spec.partition(":")[0]
    size = image_size or DEFAULT_SIZE
    if name in BUILTIN:
        split = spec.partition(":")[2] or "train"
        if split not in ("train", "test"):
            raise UserError(f"{spec}: split must be train or test")
        dataset = dataset_from_spec(spec, size)
        n = min(num or len(dataset), len(dataset))
        images, _ = dataset.batch(torch.linspace(0, len(dataset) - 1, n).round().long())
        return images, f"{spec} ({n} images)"
    path, skipped = Path(spec).expanduser(), ""
    if path.suffix == ".npz":
        images = npz_images(spec, size).images
    elif is_checkpoint_or_run(spec):
        return sample_checkpoint(spec, num or DEFAULT_FAKE_SAMPLES)
    elif path.is_dir():
        folder = read_folder(DataConfig(name="folder", path=spec, image_size=size, channels=3))
        images = folder.images
        skipped = f", {folder.skipped} undecodable files skipped" if folder.skipped else ""
    else:
        raise UserError(f"{spec}: not a built-in dataset ({', '.join(BUILTIN)}), folder, .npz or checkpoint")
    images = images[: num or len(images)]
    return images, f"{spec} ({len(images)} images{skipped})"


def sample_checkpoint(spec: str, num: int) -> tuple[torch.Tensor, str]:
    from raygan.checkpoint import load_generator
    from raygan.images import generate

    G, cfg, meta = load_generator(spec)
    z, labels = fixed_latents(cfg, meta["num_classes"], num)
    return generate(G, z, labels), f"{meta['checkpoint']} ({num} samples, step {meta.get('step')})"


def _checkpoint_size(spec: str) -> int | None:
    if is_checkpoint_or_run(spec):
        from raygan.checkpoint import read_config, resolve_checkpoint

        return read_config(resolve_checkpoint(spec)).data.image_size
    return None


def default_features(*specs: str) -> str:
    """The feature network a comparison of these specs should use when none is named."""
    from raygan.checkpoint import read_config, resolve_checkpoint

    for spec in specs:
        if is_checkpoint_or_run(spec):
            return read_config(resolve_checkpoint(spec)).eval.features
    return "emoji" if any(spec.partition(":")[0] == "emoji" for spec in specs) else "digits"


# `raygan fid`'s errors name its flags, not the config keys the shared loaders name
FID_FLAGS = {"eval.features": "--features", "eval.inception_weights": "--inception-weights"}


@contextlib.contextmanager
def errors_named(flag: str | None = None):
    """UserErrors re-raised naming `flag` instead of data.path (or --features for eval.features, ...)."""
    try:
        yield
    except ConfigError as e:
        raise UserError(f"{FID_FLAGS.get(e.key, flag or e.key)}: {str(e).removeprefix(e.key + ': ')}") from None
    except UserError as e:
        if flag is None:
            raise
        raise UserError(f"{flag}: {str(e).removeprefix('data.path: ')}") from None


def fid_between(
    real: str, fake: str, features: str | None = None, num: int | None = None, inception_weights: str | None = None
) -> dict:
    features = features or default_features(fake, real)
    size = _checkpoint_size(fake) or _checkpoint_size(real)
    with errors_named("--real"):
        real_images, real_text = load_images(real, num, size)
    with errors_named("--fake"):
        fake_images, fake_text = load_images(fake, num, size or real_images.shape[-1])
    if real_images.shape[1] != fake_images.shape[1]:
        theirs, ours = channels(real_images.shape[1]), channels(fake_images.shape[1])
        raise UserError(f"--fake: {fake} has {ours}, but --real {real} has {theirs}")
    if min(len(real_images), len(fake_images)) < 2:
        raise UserError("--num: FID needs at least 2 images on each side")
    with errors_named():
        out = image_metrics(real_images, fake_images, features, inception_weights)
    return {
        **out,
        "features": features,
        "real": real_text,
        "fake": fake_text,
        "num_real": len(real_images),
        "num_fake": len(fake_images),
    }


def channels(n: int) -> str:
    return f"{n} channel" if n == 1 else f"{n} channels"


def image_metrics(
    real_images: torch.Tensor, fake_images: torch.Tensor, features: str = "digits", inception_weights: str | None = None
) -> dict:
    """FID/KID/MiFID and precision/recall/density/coverage between two sets of images in [-1, 1] with
    the same channels; the last four are NaN with 5 images or fewer on a side (no 5 neighbours to measure)."""
    extractor = load_extractor(features, real_images.shape[1], inception_weights)
    real, fake = extract(extractor, real_images)[0], extract(extractor, fake_images)[0]
    metrics = FeatureMetrics(extractor.num_features)
    metrics.add_real(real)
    metrics.add_fake(fake)
    out = metrics.compute(len(real_images), len(fake_images))
    n = min(PRDC_SAMPLES, len(real), len(fake))  # equal counts, as in both papers
    out.update(
        prdc(evenly_spaced(real, n), evenly_spaced(fake, n)) if n > NEAREST_K else dict.fromkeys(PRDC_KEYS, math.nan)
    )
    return {**out, "prdc_samples": n}
