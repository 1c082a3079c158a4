import numpy as np
import pytest
import torch
from PIL import Image

from raygan.config import DataConfig
from raygan.data import BatchIndices, dataset_from_spec, load_dataset
from raygan.errors import UserError


def test_digits_splits_are_fixed_and_disjoint():
    train, test = load_dataset(DataConfig(image_size=32)), load_dataset(DataConfig(image_size=32), split="test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape == (1437, 1, 32, 32) and train.num_classes == 10
    assert train.images.min() >= -1 and train.images.max() <= 1
    assert torch.bincount(test.labels).min() >= 35  # stratified
    small = lambda d: {tuple(x.flatten().tolist()) for x in load_dataset(DataConfig(image_size=8), split=d).images}
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
