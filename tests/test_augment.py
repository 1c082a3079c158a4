"""DiffAugment: what each transform does, that gradients pass, that ranks draw the same global batch."""

import pytest
import torch

from raygan.augment import augment, color, cutout, translation
from raygan.config import build_config
from raygan.errors import ConfigError


def square(n=6, size=32):
    """n black images with a white 8x8 square at rows and columns 12..19."""
    images = torch.full((n, 1, size, size), -1.0)
    images[:, :, 12:20, 12:20] = 1.0
    return images


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_translation_shifts_by_whole_pixels_within_an_eighth_and_fills_with_background():
    out = translation(square(64), seeded(), 64, slice(0, 64))
    assert out.shape == (64, 1, 32, 32)
    assert set(out.unique().tolist()) == {-1.0, 1.0}  # whole pixels: nothing interpolated
    assert torch.all((out > 0).sum((1, 2, 3)) == 64)  # the square moved, whole, and nothing else came in
    tops = torch.stack([(img[0] > 0).nonzero()[:, 0].min() for img in out])
    assert tops.min() >= 12 - 4 and tops.max() <= 12 + 4 and len(tops.unique()) > 3


def test_cutout_zeroes_one_square_half_the_side():
    out = cutout(torch.ones(8, 1, 32, 32), seeded(), 8, slice(0, 8))
    assert torch.all((out == 0).sum((1, 2, 3)) == 16 * 16)


def test_gradients_reach_the_generator_through_both():
    images = square(4).requires_grad_(True)
    augment(images, ("translation", "cutout"), seeded(), 4, slice(0, 4)).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_each_rank_augments_its_slice_as_the_global_batch_would():
    images = square(8) + torch.linspace(0, 0.5, 8).view(8, 1, 1, 1)  # every image its own
    whole = augment(images, ("translation", "cutout"), seeded(3), 8, slice(0, 8))
    halves = [
        augment(images[r * 4 : (r + 1) * 4], ("translation", "cutout"), seeded(3), 8, slice(r * 4, (r + 1) * 4))
        for r in range(2)
    ]
    assert torch.equal(torch.cat(halves), whole)
    assert not torch.equal(whole, augment(images, ("translation", "cutout"), seeded(4), 8, slice(0, 8)))


def test_translation_repeats_the_edge():
    white = torch.ones(16, 3, 32, 32)  # a white border stays white when shifted
    white[:, :, 10:20, 10:20] = -1.0
    out = translation(white, seeded(), 16, slice(0, 16))
    assert torch.all(out[:, :, :4] == 1.0) and torch.all(out[:, :, -4:] == 1.0)


def test_color_matches_hand_computation():
    images = torch.tensor([[-1.0, 0.0, 0.5]]).view(1, 3, 1, 1).repeat(1, 1, 2, 2)
    images[..., 1, 1] = 1.0  # one pixel grey-white, so the image mean differs from the pixel means
    b, s, c = torch.rand(3, 1, generator=seeded(5))[:, 0].tolist()
    x = images + (b - 0.5)
    x = x.mean(1, keepdim=True) + (x - x.mean(1, keepdim=True)) * (2 * s)
    x = x.mean((1, 2, 3), keepdim=True) + (x - x.mean((1, 2, 3), keepdim=True)) * (c + 0.5)
    assert torch.allclose(color(images, seeded(5), 1, slice(0, 1)), x)


def test_probability_p_applies_each_transform_to_about_that_share():
    images = square(400)
    assert torch.equal(augment(images, ("cutout",), seeded(), 400, slice(0, 400), p=0.0), images)
    out = augment(images, ("cutout",), seeded(), 400, slice(0, 400), p=0.3)
    changed = (out != images).flatten(1).any(1).float().mean().item()
    assert 0.2 < changed < 0.4


def test_unknown_augmentation_is_a_config_error():
    with pytest.raises(ConfigError, match="train.augment: 'flip' is not one of: translation, cutout, color"):
        build_config({"train": {"augment": ["flip"]}})
    assert build_config({"train": {"augment": ["translation", "cutout"]}}).train.augment == ("translation", "cutout")
