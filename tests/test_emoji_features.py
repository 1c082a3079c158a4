"""The shipped emoji feature network sees shape, not only colour: FID rises with blur and with patch
shuffling of real emoji, and colour blobs in each emoji's own palette score worse than half resolution."""

import pytest
import torch

from raygan.data import emoji
from raygan.metrics.baselines import blur, colour_blobs, shuffle_patches
from raygan.metrics.features import load_extractor
from raygan.metrics.fid import FeatureMetrics, extract


@pytest.fixture(scope="module")
def scorer():
    extractor = load_extractor("emoji", 3)
    train, test = emoji("train", 32), emoji("test", 32)

    def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
        metrics = FeatureMetrics(extractor.num_features)
        metrics.add_real(extract(extractor, real)[0])
        metrics.add_fake(extract(extractor, fake)[0])
        return metrics.compute(len(real), len(fake))["fid"]

    return fid, train.images, test.images


def test_fid_rises_strictly_with_blur(scorer):
    fid, train, test = scorer
    scores = [fid(test, train)] + [fid(test, blur(train, size)) for size in (16, 8, 4)]
    assert scores == sorted(scores) and len(set(scores)) == 4, scores


def test_fid_rises_strictly_with_patch_shuffling(scorer):
    fid, train, test = scorer
    g = torch.Generator().manual_seed(0)
    scores = [fid(test, train)] + [fid(test, shuffle_patches(train, grid, g)) for grid in (2, 4, 8)]
    assert scores == sorted(scores) and len(set(scores)) == 4, scores


def test_colour_blobs_score_worse_than_the_half_resolution_baseline(scorer):
    fid, train, test = scorer
    blobs = colour_blobs(train, torch.Generator().manual_seed(0))
    assert fid(test, blobs) > fid(test, blur(train, 16))


def test_categories_are_read_from_held_out_emoji():
    extractor = load_extractor("emoji", 3)
    test = emoji("test", 32)
    _, classes = extract(extractor, test.images)
    assert (classes == test.labels).float().mean() > 0.8
