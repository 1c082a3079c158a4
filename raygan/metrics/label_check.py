"""Does a conditional generator draw the digit it is asked for? Judged by an independent classifier.

    classifier = DigitClassifier.fit()                       # scikit-learn SVC on the real 8x8 digits
    result = label_accuracy(G, classifier, per_class=500)    # {"accuracy", "per_class", "worst_class", "spread"}
    real_spread()                                            # the same spread of the real test digits

The judge is not the FID feature network: it is a support-vector classifier fitted on scikit-learn's
8x8 training digits (raygan's training split), and generated images are brought back to that form:
downsampled to 8x8 (antialiased, as the dataset was upsampled) and scaled to [0, 16].
"""

from __future__ import annotations

import math

import numpy as np
import torch

from raygan.data import _digits_arrays, digits, resize
from raygan.images import generate

NATIVE_SIZE = 8
CHECK_SEED = 1234


def to_native(images: torch.Tensor) -> np.ndarray:
    """N x 1 x H x W in [-1, 1] -> N x 64 floats in [0, 16], the form of `sklearn.datasets.load_digits`."""
    small = resize(images.float().clamp(-1, 1), NATIVE_SIZE)
    return ((small + 1) * 8).clamp(0, 16).reshape(images.shape[0], -1).numpy()


class DigitClassifier:
    """scikit-learn's SVC (RBF, gamma 0.001, C 10) on the 8x8 training digits; about 99% on digits:test."""

    def __init__(self, model, test_accuracy: float):
        self.model, self.test_accuracy = model, test_accuracy

    @classmethod
    def fit(cls) -> DigitClassifier:
        from sklearn.svm import SVC

        images, labels, is_test = _digits_arrays()
        flat = images.reshape(len(images), -1)
        model = SVC(gamma=0.001, C=10.0).fit(flat[~is_test], labels[~is_test])
        return cls(model, float((model.predict(flat[is_test]) == labels[is_test]).mean()))

    def predict(self, images: torch.Tensor) -> np.ndarray:
        return self.read(to_native(images))

    def read(self, native: np.ndarray) -> np.ndarray:
        """The labels of images already in the judge's form (`to_native`)."""
        return self.model.predict(native)


def label_accuracy(
    G: torch.nn.Module,
    classifier: DigitClassifier,
    per_class: int = 500,
    num_classes: int = 10,
    seed: int = CHECK_SEED,
    device="cpu",
) -> dict:
    """Share of samples drawn for label k that the classifier reads as k, overall and per class, and how
    much the samples of one label differ (`spread`, as `within_label_spread`)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    z = torch.randn(len(labels), G.latent_dim, generator=g)
    images = generate(G, z, labels, device=device)
    if images.shape[1] != 1:
        raise ValueError(f"the digit check needs 1-channel images, got {images.shape[1]} channels")
    native = to_native(images)
    return {
        **accuracy_by_class(classifier.read(native), labels.numpy(), num_classes),
        "spread": within_label_spread(native, labels.numpy(), num_classes),
    }


def within_label_spread(native: np.ndarray, labels: np.ndarray, num_classes: int = 10) -> float:
    """How much images of one label differ: the mean over labels of the RMS pixel difference between two
    images of that label, as the judge sees them (8x8, [0, 16] taken to [0, 1]). A G that ignores z: 0."""
    spreads = []
    for k in range(num_classes):
        images = torch.from_numpy(native[labels == k] / 16).float()
        spreads.append((torch.pdist(images) / math.sqrt(images.shape[1])).mean().item())
    return float(np.mean(spreads))


def real_spread() -> float:
    """`within_label_spread` of the real test digits, upsampled to 32x32 as raygan trains on them and
    brought back to 8x8 as samples are."""
    test = digits("test", 32)
    return within_label_spread(to_native(test.images), test.labels.numpy())


def accuracy_by_class(predicted: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    per_class = [float((predicted[labels == k] == k).mean()) for k in range(num_classes)]
    return {
        "accuracy": float((predicted == labels).mean()),
        "per_class": per_class,
        "worst_class": int(np.argmin(per_class)),
    }


def mode_coverage(G: torch.nn.Module, num_samples: int = 10_000, seed: int = CHECK_SEED, device="cpu") -> dict:
    """Stacked digits (one digit per channel, 1,000 modes): which modes `num_samples` samples reach."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(num_samples, G.latent_dim, generator=g)
    return image_modes(generate(G, z, None, device=device))


def image_modes(images: torch.Tensor) -> dict:
    """Modes of images in [-1, 1], read by the digits network per channel, and KL from uniform in nats."""
    from raygan.metrics.features import load_extractor
    from raygan.metrics.fid import extract

    features, modes = extract(load_extractor("digits", images.shape[1]), images)
    stats = mode_histogram_statistics(torch.bincount(modes, minlength=10 ** images.shape[1]))
    return {**stats, "legibility": feature_legibility(features, images.shape[1])}


def legibility(images: torch.Tensor) -> list[float]:
    """Per channel, the median probability the digits network gives to its reading of the digit there: about
    0.95 on real digits; near 0.5 the reading (and so the digit mix and the KL) is partly a guess."""
    from raygan.metrics.features import load_extractor
    from raygan.metrics.fid import extract

    features, _ = extract(load_extractor("digits", images.shape[1]), images)
    return feature_legibility(features, images.shape[1])


@torch.no_grad()
def feature_legibility(features: torch.Tensor, channels: int) -> list[float]:
    """`legibility` from the digits extractor's features (N x 128 per channel), without a second pass."""
    from raygan.metrics.digits_net import load_digits_net

    logits = load_digits_net().classifier(features.float().view(len(features), channels, -1))
    return torch.softmax(logits, -1).amax(-1).median(0).values.tolist()


def mode_histogram_statistics(hist: torch.Tensor) -> dict:
    """The evaluator's mode statistics against a uniform distribution (`mode_kl`), the commonest count, and
    each channel's digit mix with its KL from uniform (where a stacked generator's KL comes from)."""
    from raygan.metrics.fid import kl_divergence, mode_statistics

    mix = digit_mix(hist)
    uniform = torch.full((10,), 0.1, dtype=torch.float64)
    return {
        **mode_statistics(hist, torch.ones_like(hist)),
        "most_common": int(hist.max()),
        "samples": int(hist.sum()),
        "digit_mix": mix.tolist(),
        "digit_mix_kl": [kl_divergence(shares, uniform) for shares in mix],
    }


def digit_mix(hist: torch.Tensor) -> torch.Tensor:
    """channels x 10: each channel's share of every digit, from a histogram of the 10**channels modes
    (mode 100a + 10b + c holds a in channel 0)."""
    channels = round(math.log10(len(hist)))
    cube = hist.double().reshape((10,) * channels)
    counts = torch.stack([cube.movedim(c, 0).reshape(10, -1).sum(1) for c in range(channels)])
    return counts / counts.sum(1, keepdim=True).clamp(min=1)
