"""raygan/images.py: generating in batches, and the grids, PNGs and GIFs made of the images."""

import io

import numpy as np
import torch
from PIL import Image

from raygan.config import build_config
from raygan.images import generate, grid_array, png_bytes, save_gif
from raygan.models import build_generator


def test_generate_in_batches_is_one_pass_in_eval_mode_and_keeps_the_mode():
    cfg = build_config(
        {"data": {"image_size": 8}, "model": {"g_layers": 2, "d_layers": 2, "g_width": 4, "latent_dim": 8}}
    )
    G = build_generator(cfg, 1, 0).train()
    z = torch.randn(7, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = G.eval()(z, None)
    G.train()
    assert torch.allclose(generate(G, z, batch_size=3), expected, atol=1e-6)  # running BatchNorm statistics
    assert G.training
    assert generate(G, z[:0]).numel() == 0


def test_grids_of_small_images_are_drawn_at_32_pixels():
    digits8 = torch.zeros(4, 1, 8, 8)
    digits8[:, :, 2:6, 3:5] = 1.0  # a bar in the middle
    grid = grid_array(digits8 * 2 - 1, 2)
    assert grid.shape == (2 + 2 * 34, 2 + 2 * 34, 3)  # 32 px an image, padding 2
    assert grid[2 + 16, 2 + 16].tolist() == [255, 255, 255] and grid[2 + 1, 2 + 1].tolist() == [0, 0, 0]
    assert grid_array(torch.zeros(4, 3, 64, 64), 2).shape == (2 + 2 * 66, 2 + 2 * 66, 3)  # larger ones as they are


def test_png_bytes_hold_the_grid_and_a_gif_its_frames(tmp_path):
    grid = grid_array(torch.rand(4, 3, 32, 32) * 2 - 1, 2)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(grid)))), grid)
    frames = [Image.fromarray(grid), Image.fromarray(255 - grid)]
    with Image.open(save_gif(frames, tmp_path / "walk.gif", [50, 50])) as gif:
        assert gif.n_frames == 2
