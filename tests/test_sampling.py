"""raygan sample's tools: truncation, slerp latent walks written as a GIF, and class grids."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from test_export import look_trained
from test_step import make, tiny

from raygan.checkpoint import checkpoint_name, load_generator, write_checkpoint
from raygan.cli import main
from raygan.images import generate
from raygan.sampling import class_rows, draw_latents, latent_walk, slerp, tiles

MODELS = {"unconditional": [], "conditional": ["model.conditional=true"]}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A checkpoint per model whose G spreads its outputs as a trained one does (untrained, they sit near 0)."""
    root = tmp_path_factory.mktemp("sampling")
    found = {}
    for model, overrides in MODELS.items():
        cfg = tiny(*overrides)
        engine, _ = make(cfg)
        g = torch.Generator().manual_seed(0)
        look_trained(engine.sampler, torch.randn(32, 16, generator=g), torch.arange(32) % 10 if overrides else None)
        found[model] = str(write_checkpoint(root / model / checkpoint_name(0), engine, cfg, {"fid": 1.0}))
    return found


def mean_pairwise_distance(images: torch.Tensor) -> float:
    flat = images.flatten(1).double()
    n = len(flat)
    return float(torch.cdist(flat, flat).sum() / (n * (n - 1)))


# ---------------------------------------------------------------------------------------------
# slerp and walks


def unit_rows(n, dim, seed):
    v = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
    return v / v.norm(dim=1, keepdim=True)


def test_slerp_keeps_unit_vectors_on_the_sphere_and_hits_both_ends_exactly():
    a, b = unit_rows(20, 64, 0), unit_rows(20, 64, 1)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    for t in (0.1, 0.25, 0.5, 0.9):
        assert torch.allclose(slerp(a, b, t).norm(dim=1), torch.ones(20), atol=1e-6)


def test_slerp_moves_at_constant_angular_speed():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    for t in (0.0, 1 / 3, 0.5, 0.8, 1.0):
        expected = torch.tensor([[math.cos(t * math.pi / 2), math.sin(t * math.pi / 2)]])
        assert torch.allclose(slerp(a, b, t), expected, atol=1e-6)


def test_slerp_of_parallel_rows_is_the_straight_line_without_nans():
    a = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a) and torch.allclose(slerp(a, a, 0.3), a)
    assert not slerp(torch.zeros(1, 3), a, 0.5).isnan().any()  # a zero row has no direction at all


def test_the_walk_passes_every_keyframe_and_closes_the_loop():
    keyframes = draw_latents(4, 16, seed=0, keyframes=3)
    walk = latent_walk(keyframes, frames_per_segment=5)
    assert walk.shape == (15, 4, 16)
    for k in range(3):
        assert torch.equal(walk[5 * k], keyframes[k])
    step_sizes = (torch.cat([walk, walk[:1]]).diff(dim=0)).norm(dim=2)  # the last frame leads back to the first
    assert step_sizes.max() < 2 * step_sizes.median()  # no jump anywhere, the wrap included


# ---------------------------------------------------------------------------------------------
# truncation


def test_truncation_one_is_plain_sampling_and_smaller_psi_scales_the_same_draw():
    plain = torch.randn(8, 16, generator=torch.Generator().manual_seed(3))  # what `raygan sample --seed 3` drew
    assert torch.equal(draw_latents(8, 16, seed=3)[0], plain)
    assert torch.equal(draw_latents(8, 16, seed=3, truncation=0.5)[0], 0.5 * plain)


def test_smaller_psi_gives_less_varied_samples(checkpoints):
    G, _, _ = load_generator(checkpoints["unconditional"])
    spread = [
        mean_pairwise_distance(generate(G, draw_latents(64, 16, seed=0, truncation=psi)[0]))
        for psi in (1.0, 0.8, 0.6, 0.4, 0.2)
    ]
    assert all(a > b for a, b in zip(spread, spread[1:])), spread
    assert spread[-1] < 0.5 * spread[0], spread


def test_psi_one_on_the_command_line_writes_what_plain_sampling_writes(checkpoints, tmp_path):
    ckpt = checkpoints["unconditional"]
    assert main(["sample", ckpt, "--num", "8", "--seed", "3", "--out", str(tmp_path / "plain")]) == 0
    assert main(["sample", ckpt, "--num", "8", "--seed", "3", "--truncation", "1", "--out", str(tmp_path / "one")]) == 0
    assert (
        main(["sample", ckpt, "--num", "8", "--seed", "3", "--truncation", "0.5", "--out", str(tmp_path / "half")]) == 0
    )
    plain, one, half = (np.load(tmp_path / f"{name}.npz")["images"] for name in ("plain", "one", "half"))
    G, _, _ = load_generator(ckpt)
    expected = generate(G, torch.randn(8, 16, generator=torch.Generator().manual_seed(3)))
    assert np.array_equal(plain, ((expected.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy())
    assert np.array_equal(plain, one) and not np.array_equal(plain, half)


# ---------------------------------------------------------------------------------------------
# class grids and the GIF


def test_class_rows_share_each_columns_latent():
    z = torch.randn(3, 4)
    latents, labels = class_rows(z, 10)
    assert latents.shape == (30, 4) and labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert torch.equal(latents[7], z[1]) and torch.equal(latents[28], z[1])  # rows 2 and 9, column 1
    assert tiles(z, 10, grid_classes=True)[2] == 3  # three images per row
    assert tiles(z, 10)[1].tolist() == [0, 1, 2] and tiles(z, 10)[2] == 10  # the default: classes in turn
    assert tiles(z, 10, label=4)[1].tolist() == [4, 4, 4] and tiles(z)[1] is None


def test_grid_classes_draws_a_row_per_class(checkpoints, tmp_path):
    assert (
        main(["sample", checkpoints["conditional"], "--num", "3", "--grid-classes", "--out", str(tmp_path / "g")]) == 0
    )
    saved = np.load(tmp_path / "g.npz")
    assert saved["images"].shape == (30, 1, 16, 16) and saved["labels"].tolist() == [
        c for c in range(10) for _ in range(3)
    ]
    with Image.open(tmp_path / "g.png") as grid:  # 16x16 images are drawn at 32x32, 2 pixels apart
        assert grid.size == (3 * 34 + 2, 10 * 34 + 2)


def gif_frames(path):
    with Image.open(path) as gif:
        sizes = set()
        for i in range(gif.n_frames):
            gif.seek(i)
            sizes.add(gif.size)
        return gif.n_frames, sizes, gif.info.get("loop")


@pytest.mark.parametrize(
    "model, args, size",
    [
        ("unconditional", ["--num", "4"], (2 * 34 + 2, 2 * 34 + 2)),  # 4 walks: a 2 x 2 grid
        ("conditional", ["--num", "2", "--grid-classes"], (2 * 34 + 2, 10 * 34 + 2)),  # a row per class
        ("conditional", ["--num", "3", "--label", "7"], (2 * 34 + 2, 2 * 34 + 2)),  # 3 sevens on a 2 x 2 grid
    ],
)
def test_interpolate_writes_a_looping_gif_with_a_frame_per_step(checkpoints, tmp_path, model, args, size):
    out = tmp_path / "walk"
    assert main(["sample", checkpoints[model], *args, "--interpolate", "3", "--frames", "4", "--out", str(out)]) == 0
    assert gif_frames(out.with_suffix(".gif")) == (12, {size}, 0)  # 3 keyframes x 4 frames, loops forever
    assert not out.with_suffix(".png").exists()


def test_the_walks_first_frame_is_the_still_grid(checkpoints, tmp_path):
    ckpt = checkpoints["conditional"]
    assert main(["sample", ckpt, "--num", "2", "--grid-classes", "--seed", "5", "--out", str(tmp_path / "still")]) == 0
    assert (
        main(
            [
                "sample",
                ckpt,
                "--num",
                "2",
                "--grid-classes",
                "--seed",
                "5",
                "--interpolate",
                "2",
                "--out",
                str(tmp_path / "walk"),
            ]
        )
        == 0
    )
    with Image.open(tmp_path / "walk.gif") as gif, Image.open(tmp_path / "still.png") as still:
        first = np.asarray(gif.convert("RGB")).astype(int)
        assert np.abs(first - np.asarray(still.convert("RGB")).astype(int)).max() <= 8  # GIF palette rounding


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--truncation", "0"], "--truncation"),
        (["--truncation", "1.5"], "--truncation"),
        (["--interpolate", "1"], "--interpolate"),
        (["--frames", "4"], "--frames"),
        (["--interpolate", "2", "--frames", "0"], "--frames"),
        (["--num", "0"], "--num"),
        (["--grid-classes"], "not a conditional model"),
        (["--label", "3"], "not a conditional model"),
    ],
)
def test_bad_sampling_arguments_exit_2_naming_them(checkpoints, tmp_path, capsys, args, needle):
    assert main(["sample", checkpoints["unconditional"], *args, "--out", str(tmp_path / "x")]) == 2
    assert needle in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_grid_classes_with_a_label_is_a_contradiction(checkpoints, tmp_path, capsys):
    assert (
        main(["sample", checkpoints["conditional"], "--grid-classes", "--label", "2", "--out", str(tmp_path / "x")])
        == 2
    )
    assert "--grid-classes" in capsys.readouterr().err
