"""Evaluation during training: FID/KID/MiFID, precision/recall/density/coverage, mode coverage and
diversity from fixed latents.

    evaluate = Evaluator(cfg, engine.channels, engine.num_classes, rank, world_size, storage_root)  # every rank
    metrics = evaluate(engine)  # fid, kid, precision, ...: a collective, every rank calls it

Each rank generates its share of `eval.num_samples` images from latents (and labels) fixed by a
constant seed, so every trial of a sweep is scored on the same latents. The real statistics come
from the cache in storage (computed by rank 0 on first use); only rank 0 feeds them to the metrics,
whose states are then summed over ranks. Precision, recall, density and coverage compare the first
`min(2,000, real images, eval.num_samples)` samples' features, gathered from every rank, with as many real
features picked evenly from the cached ones; rank 0 scores them and every rank reports its numbers.
"""

from __future__ import annotations

import time

import torch

from raygan.collectives import all_reduce_sum, barrier, world_size
from raygan.config import Config
from raygan.metrics.features import load_extractor
from raygan.metrics.fid import (
    DIVERSITY_SAMPLES,
    FeatureMetrics,
    extract,
    mode_statistics,
    pairwise_distance_sum,
    real_statistics,
)
from raygan.metrics.prdc import KEYS as PRDC_KEYS
from raygan.metrics.prdc import NEAREST_K, PRDC_SAMPLES, evenly_spaced, nearest_neighbour_radii, prdc

EVAL_SEED = 20_240_601  # the same latents for every run and trial
LABELLED_DATA = ("digits", "stacked-digits")  # data whose classes the digits extractor recognises


def fixed_latents(cfg: Config, num_classes: int, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(EVAL_SEED)
    z = torch.randn(n, cfg.model.latent_dim, generator=g)
    labels = torch.arange(n) % num_classes if cfg.model.conditional else None  # balanced classes
    return z, labels


class Evaluator:
    def __init__(
        self,
        cfg: Config,
        channels: int,
        num_classes: int,
        rank: int,
        world_size: int,
        storage_root: str | None,
        device="cpu",
    ):
        self.cfg, self.device, self.rank = cfg, device, rank
        self.extractor = load_extractor(cfg.eval.features, channels, cfg.eval.inception_weights).to(device)
        labelled = cfg.data.name in LABELLED_DATA and self.extractor.num_classes > 0
        if rank == 0:  # one rank computes and caches; the others read the cache after the barrier
            stats, self.real_computed = real_statistics(cfg.data, self.extractor, storage_root, labelled)
        barrier()
        if rank != 0:
            stats, self.real_computed = real_statistics(cfg.data, self.extractor, storage_root, labelled)
        self.num_real = stats["features"].shape[0]
        self.real_diversity = float(stats["diversity"])
        self.real_hist = stats.get("class_hist")
        self.metrics = FeatureMetrics(self.extractor.num_features, device)
        real = stats["features"] if rank == 0 else stats["features"][:0]  # summed over ranks: give it once
        self.metrics.add_real(real.to(device))
        n = cfg.eval.num_samples
        z, labels = fixed_latents(cfg, num_classes, n)
        share = slice(n * rank // world_size, n * (rank + 1) // world_size)
        self.z, self.labels = z[share], (labels[share] if labels is not None else None)
        self.share_start = share.start
        # equal real and fake counts, as in both papers; real balls are the same at every evaluation
        self.num_prdc = min(PRDC_SAMPLES, self.num_real, n)
        if rank == 0 and self.num_prdc > NEAREST_K:
            self.prdc_real = evenly_spaced(stats["features"], self.num_prdc).to(device)
            self.prdc_radii = nearest_neighbour_radii(self.prdc_real)

    def __call__(self, engine) -> dict:
        start = time.perf_counter()
        images = engine.generate(self.z, self.labels)
        features, classes = extract(self.extractor, images)
        self.metrics.reset_fake()
        self.metrics.add_fake(features)
        out = self.metrics.compute(self.num_real, self.cfg.eval.num_samples)
        distance_sum, pairs = pairwise_distance_sum(features[: max(2, DIVERSITY_SAMPLES // world_size())])
        totals = all_reduce_sum(torch.tensor([distance_sum, float(pairs)], dtype=torch.float64))
        out["diversity"] = float(totals[0] / totals[1].clamp(min=1)) / max(self.real_diversity, 1e-12)
        if self.real_hist is not None and classes is not None:
            hist = all_reduce_sum(torch.bincount(classes.cpu(), minlength=len(self.real_hist)).double())
            out.update(mode_statistics(hist, self.real_hist))
        if self.num_prdc > NEAREST_K:  # fewer samples than neighbours: no balls to score with
            out.update(self._prdc(features))
        out["eval_s"] = time.perf_counter() - start
        return out

    def _prdc(self, features: torch.Tensor) -> dict:
        """Scores of the first `num_prdc` samples; a collective (every rank calls it)."""
        fake = torch.zeros(self.num_prdc, features.shape[1], device=features.device)
        stop = min(self.share_start + features.shape[0], self.num_prdc)
        if stop > self.share_start:  # this rank holds some of them: summing fills each row once
            fake[self.share_start : stop] = features[: stop - self.share_start]
        fake = all_reduce_sum(fake)
        scores = torch.zeros(len(PRDC_KEYS), dtype=torch.float64)
        if self.rank == 0:  # one rank computes; the sum hands its numbers to the rest
            found = prdc(self.prdc_real, fake, real_radii=self.prdc_radii)
            scores = torch.tensor([found[key] for key in PRDC_KEYS], dtype=torch.float64)
        scores = all_reduce_sum(scores)
        return {key: float(value) for key, value in zip(PRDC_KEYS, scores)}
