"""A user's own folder of colour images through the emoji recipe, as the README tells it: RGBA, palette,
grayscale and JPEG files in nested class folders with a few undecodable ones, and a TorchScript feature
network exported the plain way, through `raygan train`, `sample`, `fid` and `report`."""

import json

import numpy as np
import pytest
import torch
from conftest import run_module
from PIL import Image

pytestmark = pytest.mark.slow


def raygan(*args, timeout=900):
    return run_module("raygan.cli", *args, timeout=timeout)


def make_folder(root):
    """24 images in two classes (one nested a level deeper), of mixed modes and sizes, and 2 broken files."""
    rng = np.random.default_rng(0)
    for i in range(24):
        folder = root / ("circles" if i % 2 else "squares") / ("deeper" if i % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        size = 40 if i % 4 else 24
        rgba = np.zeros((size, size, 4), np.uint8)
        colour = rng.integers(0, 256, 3)
        ys, xs = np.mgrid[:size, :size]
        inside = (
            (ys - size / 2) ** 2 + (xs - size / 2) ** 2 < (size / 3) ** 2
            if i % 2
            else (abs(ys - size / 2) < size / 3) & (abs(xs - size / 2) < size / 3)
        )
        rgba[inside] = (*colour, 255)
        image = Image.fromarray(rgba, "RGBA")
        kind = i % 4
        if kind == 0:
            image.save(folder / f"{i}.png")  # RGBA, transparent background
        elif kind == 1:
            image.convert("RGB").save(folder / f"{i}.jpg")  # RGB, black background
        elif kind == 2:
            image.convert("RGB").convert("P", palette=Image.ADAPTIVE).save(folder / f"{i}.gif")  # palette
        else:
            image.convert("L").save(folder / f"{i}.png")  # grayscale
    (root / "squares" / "broken.png").write_bytes(b"not a png")
    (root / "circles" / "empty.jpg").write_bytes(b"")


class PlainFeatures(torch.nn.Module):
    """What a user exports: [0, 1] images in, features out, nothing more."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, 2, 1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, 2, 1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten(),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


def test_own_folder_through_train_sample_fid_and_report(tmp_path):
    data, storage = tmp_path / "my images", tmp_path / "runs"
    make_folder(data)
    features = tmp_path / "features.pt"
    torch.jit.script(PlainFeatures()).save(str(features))
    result = raygan(
        "train",
        "tune_configs/emoji.yaml",
        "--set",
        "data.name=folder",
        "--set",
        f"data.path={data}",
        "--set",
        f"eval.features={features}",
        "--storage",
        str(storage),
        "--name",
        "mine",
        "--json",
        # a short run; the recipe's workers keep every CPU of this 2-core machine, as the streamed path could not
        "--set",
        "train.steps=20",
        "--set",
        "train.eval_every=10",
        "--set",
        "train.checkpoint_every=10",
        "--set",
        "train.report_every=10",
        "--set",
        "eval.num_samples=32",
        "--set",
        "train.batch_size=16",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["step"] == 20 and np.isfinite(summary["fid"])
    assert "skipped 2 undecodable files" in result.stdout + result.stderr

    sample = raygan("sample", str(storage / "mine"), "--num", "8", "--out", str(tmp_path / "grid"))
    assert sample.returncode == 0, sample.stderr
    images = np.load(tmp_path / "grid.npz")["images"]
    assert images.shape == (8, 3, 32, 32) and images.dtype == np.uint8

    fid = raygan("fid", "--real", str(data), "--fake", str(storage / "mine"), "--features", str(features), "--json")
    assert fid.returncode == 0, fid.stderr
    assert np.isfinite(json.loads(fid.stdout.strip().splitlines()[-1])["fid"])

    report = raygan("report", str(storage / "mine"), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "index.html").is_file()


def test_resume_on_a_folder_repeats_the_batches(tmp_path):
    """Decoded into memory, a folder's batches are a function of the step, as the built-in data's are."""
    from raygan.config import DataConfig
    from raygan.data import indexed_batches, load_dataset

    make_folder(tmp_path)
    dataset = load_dataset(DataConfig(name="folder", path=str(tmp_path), image_size=16))
    assert len(dataset) == 24 and dataset.skipped == 2 and dataset.num_classes == 2
    first, again = indexed_batches(dataset, 8, 0), indexed_batches(dataset, 8, 0)
    assert all(torch.equal(first(k)[0], again(k)[0]) for k in (5, 2, 9))


def test_the_emoji_as_a_folder_are_the_same_run(tmp_path):
    """The recipe on a user's folder is the recipe on the built-in data: the built-in training emoji saved as
    a folder of 64x64 RGBA PNGs load to the same tensors, and a short run of tune_configs/emoji.yaml on each
    ends with the same generator and the same FID, so the folder reaches the built-in run's ratio to its blur
    baseline (a folder run is scored against the folder, as the built-in run against its training split)."""
    from raygan.checkpoint import load_generator
    from raygan.config import DataConfig
    from raygan.data import emoji, emoji_arrays, load_dataset

    images, index = emoji_arrays()
    folder = tmp_path / "emoji"
    folder.mkdir()
    for i, rgba in enumerate(images[~np.asarray(index["test"], dtype=bool)]):
        Image.fromarray(rgba, "RGBA").save(folder / f"{i:05d}.png")  # named in the built-in order
    loaded = load_dataset(DataConfig(name="folder", path=str(folder), image_size=32, xflip=True))
    assert torch.equal(loaded.images, emoji("train", 32).images)

    short = ["--set", "train.steps=30", "--set", "train.eval_every=30", "--set", "train.report_every=10"]
    short += ["--set", "eval.num_samples=256", "--storage", str(tmp_path / "runs"), "--json"]
    built_in = raygan("train", "tune_configs/emoji.yaml", "--name", "built-in", *short)
    as_folder = raygan(
        "train", "tune_configs/emoji.yaml", "--name", "folder", "--set", "data.name=folder",
        "--set", f"data.path={folder}", *short,
    )  # fmt: skip
    assert built_in.returncode == 0, built_in.stderr[-3000:]
    assert as_folder.returncode == 0, as_folder.stderr[-3000:]
    first, second = (json.loads(r.stdout.strip().splitlines()[-1]) for r in (built_in, as_folder))
    assert first["step"] == second["step"] == 30
    assert first["fid"] == pytest.approx(second["fid"], rel=1e-5)
    generators = [load_generator(r["best_checkpoint"])[0].state_dict() for r in (first, second)]
    assert generators[0].keys() == generators[1].keys()
    assert all(torch.equal(generators[0][k], generators[1][k]) for k in generators[0])
