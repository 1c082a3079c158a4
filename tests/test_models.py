import itertools

import pytest
import torch

from raygan.config import build_config
from raygan.models import build_discriminator, build_generator, count_parameters


def test_pytorch_examples_dcgan_parameter_counts():
    """64x64x3, latent 100, widths 64, 5 layers each: the pytorch/examples DCGAN exactly."""
    cfg = build_config({"data": {"image_size": 64}, "model": {"g_layers": 5, "d_layers": 5}})
    assert count_parameters(build_generator(cfg, 3, 0)) == 3_576_704
    assert count_parameters(build_discriminator(cfg, 3, 0)) == 2_765_568


@pytest.mark.parametrize("size, layers", [(16, 2), (16, 3), (32, 2), (32, 4), (64, 3), (64, 5), (128, 6)])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_for_sizes_and_layer_counts(size, layers, channels):
    cfg = build_config(
        {"data": {"image_size": size}, "model": {"g_layers": layers, "d_layers": layers, "g_width": 8, "d_width": 8}}
    )
    G, D = build_generator(cfg, channels, 0), build_discriminator(cfg, channels, 0)
    images = G(torch.randn(3, cfg.model.latent_dim))
    assert images.shape == (3, channels, size, size)
    assert images.abs().max() <= 1
    assert D(images).shape == (3,)


NORMS = ["batch", "none", "layer", "spectral"]
ACTIVATIONS = ["relu", "leaky_relu"]


@pytest.mark.parametrize("d_norm, activation, conditional", list(itertools.product(NORMS, ACTIVATIONS, [False, True])))
def test_options_give_finite_outputs(d_norm, activation, conditional):
    cfg = build_config(
        {
            "model": {
                "d_norm": d_norm, "g_activation": activation, "d_activation": activation,
                "d_dropout": 0.3, "conditional": conditional, "g_width": 16, "d_width": 16,
            }
        }
    )  # fmt: skip
    G, D = build_generator(cfg, 1, 10), build_discriminator(cfg, 1, 10)
    labels = torch.arange(4) % 10 if conditional else None
    logits = D(G(torch.randn(4, 100), labels), labels)
    assert logits.shape == (4,) and torch.isfinite(logits).all()


def test_conditional_generator_depends_on_the_label():
    """G's label embedding starts at zero (G starts unconditional, see dcgan.py) and is wired in."""
    cfg = build_config({"model": {"conditional": True, "g_width": 8}})
    G = build_generator(cfg, 1, 10).eval()
    z = torch.randn(1, 100).repeat(2, 1)
    assert torch.equal(*G(z, torch.tensor([3, 7])))
    torch.nn.init.normal_(G.label_embedding.weight)  # as training moves it
    images = G(z, torch.tensor([3, 7]))
    assert not torch.allclose(images[0], images[1])
    D = build_discriminator(cfg, 1, 10).eval()
    x = images[:1].repeat(2, 1, 1, 1).detach()
    scores = D(x, torch.tensor([3, 7]))
    assert scores[0] != scores[1]


def test_g_norm_none_has_no_batchnorm():
    cfg = build_config({"model": {"g_norm": "none", "d_norm": "layer"}})
    modules = list(build_generator(cfg, 1, 0).modules()) + list(build_discriminator(cfg, 1, 0).modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in modules)


def test_bn_momentum_reaches_the_layers():
    cfg = build_config({"model": {"bn_momentum": 0.2}})
    bns = [m for m in build_discriminator(cfg, 1, 0).modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.2 for m in bns)


def test_packed_discriminator_scores_each_pack_once():
    """PacGAN: D sees 2 samples at once; both members of a pack get the pack's logit."""
    cfg = build_config({"data": {"image_size": 16}, "model": {"g_layers": 3, "d_layers": 3, "d_width": 8, "pack": 2}})
    D = build_discriminator(cfg, 1, 0).eval()
    assert D.inner.features[0].in_channels == 2
    images = torch.randn(6, 1, 16, 16)
    logits = D(images)
    assert logits.shape == (6,)
    assert torch.equal(logits[0::2], logits[1::2])
    swapped = images[[1, 0, 2, 3, 4, 5]]  # order within a pack matters to D, other packs are unaffected
    assert torch.equal(D(swapped)[2:], logits[2:])
