"""Precision, recall, density and coverage of generated samples against real ones, in feature space.

    >>> import torch
    >>> from raygan.metrics.prdc import prdc
    >>> real = torch.randn(1000, 16, generator=torch.Generator().manual_seed(0))
    >>> scores = prdc(real, real.clone())          # a set against itself
    >>> scores["precision"], scores["recall"], scores["coverage"], round(scores["density"], 2)
    (1.0, 1.0, 1.0, 1.0)

Each sample gets a ball reaching to its k-th nearest neighbour in its own set (k = 5, as in both papers).
Kynkaanniemi et al. 2019: precision is the share of fakes inside some real ball (fidelity), recall the
share of reals inside some fake ball (diversity). Naeem et al. 2020: density counts how many real balls
hold each fake (divided by k: about 1 when the two sets match; above 1 where fakes bunch in dense real
regions) and coverage is the share of real balls that hold a fake; both use real balls only, so fake
outliers cannot inflate them. The definitions follow clovaai/prdc (MIT, the authors' code; the tests
check equality with it), computed with torch.cdist so that it runs where the features are (a GPU too)
without scikit-learn's worker pool.
"""

from __future__ import annotations

import torch

NEAREST_K = 5  # the papers' k; the scores depend on it, so every raygan number uses the same
PRDC_SAMPLES = 2_000  # real and fake samples per computation: its cost grows with their product
KEYS = ("precision", "recall", "density", "coverage")


def nearest_neighbour_radii(features: torch.Tensor, k: int = NEAREST_K) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row (the row itself, at 0, is the first)."""
    if features.shape[0] <= k:
        raise ValueError(f"PRDC needs more than k={k} samples per set, got {features.shape[0]}")
    distances = torch.cdist(features.double(), features.double())
    return distances.topk(k + 1, dim=1, largest=False).values[:, -1]  # topk: 5x faster than kthvalue here


def prdc(
    real: torch.Tensor, fake: torch.Tensor, k: int = NEAREST_K, real_radii: torch.Tensor | None = None
) -> dict[str, float]:
    """{"precision", "recall", "density", "coverage"} of `fake` against `real` (N x D feature rows).

    `real_radii` (from nearest_neighbour_radii(real, k)) skips recomputing the real balls, which stay
    the same at every evaluation."""
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real features have {real.shape[1]} dimensions, fake ones {fake.shape[1]}")
    real, fake = real.double(), fake.to(real.device).double()  # float64: boundary cases decide the same as numpy
    if real_radii is None:
        real_radii = nearest_neighbour_radii(real, k)
    fake_radii = nearest_neighbour_radii(fake, k)
    distances = torch.cdist(real, fake)  # real rows x fake columns
    in_real_ball = distances < real_radii.to(real.device, torch.float64)[:, None]
    return {
        "precision": float(in_real_ball.any(dim=0).double().mean()),
        "recall": float((distances < fake_radii[None, :]).any(dim=1).double().mean()),
        "density": float(in_real_ball.sum(dim=0).double().mean() / k),
        "coverage": float(in_real_ball.any(dim=1).double().mean()),  # a real ball holding any fake
    }


def evenly_spaced(features: torch.Tensor, n: int) -> torch.Tensor:
    """A fixed subset of n rows spread over the whole set (the same rows every time)."""
    if n >= features.shape[0]:
        return features
    return features[torch.linspace(0, features.shape[0] - 1, n).round().long()]
