import numpy as np
import pytest
import torch
from PIL import Image

from raygan.config import DataConfig
from raygan.data import BatchIndices, dataset_from_spec, emoji_arrays, load_dataset
from raygan.errors import UserError


def test_digits_splits_are_fixed_and_disjoint():
    train, test = load_dataset(DataConfig(image_size=32)), load_dataset(DataConfig(image_size=32), split="test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape == (1437, 1, 32, 32) and train.num_classes == 10
    assert train.images.min() >= -1 and train.images.max() <= 1
    assert torch.bincount(test.labels).min() >= 35  # stratified

    def small(d):
        return {tuple(x.flatten().tolist()) for x in load_dataset(DataConfig(image_size=8), split=d).images}

    assert not small("train") & small("test")
    assert torch.equal(dataset_from_spec("digits:test", 32).images, test.images)


def test_stacked_digits_have_a_thousand_modes():
    data = load_dataset(DataConfig(name="stacked-digits", image_size=16))
    images, labels = data.batch(torch.arange(5000))
    assert images.shape == (5000, 3, 16, 16) and data.num_classes == 1000
    assert labels.max() < 1000 and len(labels.unique()) > 950


def test_random_noise_channels():
    data = load_dataset(DataConfig(name="random", image_size=16, channels=1))
    assert data.batch(torch.arange(4))[0].shape == (4, 1, 16, 16)


def test_folder_with_classes_skips_bad_files(tmp_path):
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dogs" / "broken.jpg").write_bytes(b"not an image")
    data = load_dataset(DataConfig(name="folder", path=str(tmp_path), image_size=16, channels=3))
    assert len(data) == 6 and data.skipped == 1 and data.num_classes == 2
    assert sorted(data.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert data.images.shape == (6, 3, 16, 16)


@pytest.mark.parametrize("height, width", [(10, 30), (30, 10)])
def test_non_square_images_are_cropped_to_their_centre_not_squashed(tmp_path, height, width):
    """White in the centred square, black beyond it: a crop keeps only white, a squash would not."""
    picture = np.zeros((height, width, 3), np.uint8)
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    picture[top : top + side, left : left + side] = 255
    Image.fromarray(picture).save(tmp_path / "wide.png")
    np.savez(tmp_path / "wide.npz", images=picture[None])
    folder = load_dataset(DataConfig(name="folder", path=str(tmp_path), image_size=8, channels=3))
    npz = load_dataset(DataConfig(name="npz", path=str(tmp_path / "wide.npz"), image_size=8))
    for data in (folder, npz):
        assert data.images.shape == (1, 3, 8, 8) and data.images.min() > 0.99


def test_empty_or_missing_sources_name_the_path(tmp_path):
    with pytest.raises(UserError, match=f"data.path: {tmp_path}: no readable images"):
        load_dataset(DataConfig(name="folder", path=str(tmp_path)))
    with pytest.raises(UserError, match="no such folder"):
        load_dataset(DataConfig(name="folder", path=str(tmp_path / "nope")))
    with pytest.raises(UserError, match="no such file"):
        load_dataset(DataConfig(name="npz", path=str(tmp_path / "x.npz")))


def test_npz_uint8_nhwc(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((5, 8, 8, 3), np.uint8), labels=np.arange(5))
    data = load_dataset(DataConfig(name="npz", path=str(path), image_size=16))
    assert data.images.shape == (5, 3, 16, 16) and data.images.min() == -1 and data.num_classes == 5
    np.savez(path, pixels=np.zeros((5, 8, 8)))
    with pytest.raises(UserError, match="has no 'images' array"):
        load_dataset(DataConfig(name="npz", path=str(path)))


def test_npz_in_s3_loads_as_the_same_file_does_locally(s3, tmp_path):
    """data.path may be an s3:// object (moto's server, signatures checked): the same dataset as the local copy."""
    import io

    from raygan.data import check_source

    buffer = io.BytesIO()
    g = np.random.default_rng(0)
    np.savez(buffer, images=g.integers(0, 256, (6, 1, 8, 8), dtype=np.uint8), labels=np.arange(6) % 3)
    (tmp_path / "d.npz").write_bytes(buffer.getvalue())
    s3.client().put_object(Bucket=s3.bucket("raygan-data"), Key="sets/d.npz", Body=buffer.getvalue())
    local = load_dataset(DataConfig(name="npz", path=str(tmp_path / "d.npz"), image_size=16))
    remote = DataConfig(name="npz", path="s3://raygan-data/sets/d.npz", image_size=16)
    check_source(remote)  # the driver's check before Ray starts
    loaded = load_dataset(remote)
    assert torch.equal(loaded.images, local.images) and torch.equal(loaded.labels, local.labels)
    assert loaded.num_classes == local.num_classes == 3
    for path in ("s3://raygan-data/sets/nope.npz", "s3://raygan-nobucket/d.npz"):
        with pytest.raises(UserError, match=f"^data.path: {path}: no such file"):
            load_dataset(DataConfig(name="npz", path=path))


def test_ranks_read_slices_of_the_global_batch():
    whole = BatchIndices(100, 8, seed=3)
    halves = [BatchIndices(100, 8, seed=3, rank=r, world_size=2) for r in range(2)]
    for k in (0, 11, 12, 13, 40):  # 12 and 13 straddle an epoch boundary (100 / 8)
        assert torch.equal(whole(k), torch.cat([h(k) for h in halves]))
    epoch = torch.cat([whole(k) for k in range(12)])[:96]
    assert len(epoch.unique()) == 96


def test_emoji_has_nine_categories_in_a_fixed_stratified_split():
    train = load_dataset(DataConfig(name="emoji", image_size=16))
    test = dataset_from_spec("emoji:test", 16)
    assert len(train) + len(test) == 3786 and len(test) == 758 and train.num_classes == 9
    assert train.images.shape[1:] == (3, 16, 16) and train.images.min() >= -1 and train.images.max() <= 1
    share = lambda d: torch.bincount(d.labels, minlength=9) / len(d)  # noqa: E731
    assert (share(train) - share(test)).abs().max() < 0.01 and share(test).min() > 0
    assert len(train.identity.unique()) + len(set(test.identity.tolist()) - set(train.identity.tolist())) == 1911


@pytest.mark.parametrize("size", [16, 32, 64])
def test_emoji_transparent_pixels_show_the_background(size):
    rgba, index = emoji_arrays()
    transparent = rgba[..., 3] == 0
    image = int(np.flatnonzero((~np.asarray(index["test"], bool)) & transparent[:, 0, 0])[0])  # a corner is clear
    position = int((~np.asarray(index["test"], bool))[:image].sum())
    for background, value in (("white", 1.0), ("black", -1.0)):
        data = load_dataset(DataConfig(name="emoji", image_size=size, background=background))
        assert torch.allclose(data.images[position, :, 0, 0], torch.full((3,), value))
    at64 = load_dataset(DataConfig(name="emoji", image_size=64, background="#ff0000")).images[position, :, 0, 0]
    assert at64.tolist() == [1.0, -1.0, -1.0]


def test_folder_rgba_palette_and_grayscale_files_are_composited(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[2:6, 2:6] = (255, 0, 0, 255)  # an opaque red square on a clear background
    rgba[0, 0] = (0, 0, 255, 128)  # half-transparent blue
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    palette = Image.fromarray(rgba[..., :3]).convert("P")
    palette.info["transparency"] = palette.getpixel((7, 7))
    palette.save(tmp_path / "b.png", transparency=palette.getpixel((7, 7)))
    Image.fromarray(np.full((8, 8), 100, np.uint8), "L").save(tmp_path / "c.png")
    data = load_dataset(DataConfig(name="folder", path=str(tmp_path), image_size=8, channels=3, background="white"))
    a, b, c = data.images
    assert torch.allclose(a[:, 7, 7], torch.ones(3)) and torch.allclose(a[:, 3, 3], torch.tensor([1.0, -1.0, -1.0]))
    assert torch.allclose((a[:, 0, 0] + 1) * 127.5, torch.tensor([127.5, 127.5, 255.0]), atol=1.0)  # blue over white
    assert torch.allclose(b[:, 7, 7], torch.ones(3)) and torch.allclose(b[:, 3, 3], torch.tensor([1.0, -1.0, -1.0]))
    assert torch.allclose((c + 1) * 127.5, torch.full_like(c, 100.0), atol=0.5)
    grey = load_dataset(DataConfig(name="folder", path=str(tmp_path), image_size=8, channels=1, background="black"))
    assert grey.images.shape == (3, 1, 8, 8) and grey.images[0, 0, 7, 7] == -1.0
