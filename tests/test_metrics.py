"""FID / KID against independent computations and properties; cached real statistics; raygan fid."""

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from conftest import usage

from raygan.config import DataConfig
from raygan.data import load_dataset
from raygan.metrics import fid as fid_module
from raygan.metrics.features import load_extractor
from raygan.metrics.fid import FeatureMetrics, extract, mode_statistics, real_statistics


@pytest.fixture(scope="module")
def digits_features():
    extractor = load_extractor("digits", channels=1)
    train = load_dataset(DataConfig(image_size=32)).images
    return extractor, train, extract(extractor, train)[0]


def fid_of(real, fake):
    metrics = FeatureMetrics(real.shape[1])
    metrics.add_real(real)
    metrics.add_fake(fake)
    return metrics.compute(len(real), len(fake))


def frechet_numpy(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook Frechet distance, written independently with numpy/scipy."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def test_fid_matches_an_independent_frechet_distance(digits_features):
    _, _, features = digits_features
    a, b = features[:700].double(), features[700:].double()
    b = b + 0.3 * torch.randn_like(b, generator=None)  # make them differ noticeably
    ours = fid_of(a, b)["fid"]
    assert ours == pytest.approx(frechet_numpy(a.numpy(), b.numpy()), rel=1e-6)


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric(digits_features):
    _, _, features = digits_features
    assert abs(fid_of(features, features)["fid"]) < 1e-6
    a, b = features[:700], features[700:1400] * 1.1
    assert fid_of(a, b)["fid"] == pytest.approx(fid_of(b, a)["fid"], rel=1e-9)


def test_kid_is_about_zero_for_identical_sets(digits_features):
    _, _, features = digits_features
    result = fid_of(features, features)
    assert abs(result["kid"]) < 1e-3


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> float:
    """KID's statistic over all samples: unbiased MMD^2 with the kernel (x.y / d + 1)^3."""
    kernel = lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3  # noqa: E731
    m = x.shape[0]
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    off = lambda k: (k.sum() - k.diagonal().sum()) / (m * (m - 1))  # noqa: E731
    return float(off(k_xx) + off(k_yy) - 2 * k_xy.mean())


def test_kid_uses_the_subset_size_it_was_given():
    """Subsets as large as the sets are all the same set: no spread, the MMD over all samples. Smaller
    subsets, as asked for, spread; larger than the sets, they are capped at the sets."""
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(200, 8, generator=g).double(), torch.randn(200, 8, generator=g).double() + 0.3

    def kid(subset_size):
        metrics = FeatureMetrics(8, kid_subset_size=subset_size, kid_subsets=5)
        metrics.add_real(real)
        metrics.add_fake(fake)
        return metrics.compute(len(real), len(fake))

    whole, part, capped = kid(200), kid(50), kid(5000)
    assert whole["kid"] == pytest.approx(mmd2_unbiased(real, fake), rel=1e-9) and whole["kid_std"] < 1e-12
    assert part["kid_std"] > 1e-6 and part["kid"] != pytest.approx(whole["kid"], rel=1e-6)
    assert capped == whole


def blur(images, strength):
    kernel = torch.ones(1, 1, strength * 2 + 1, strength * 2 + 1) / (strength * 2 + 1) ** 2
    return F.conv2d(images, kernel, padding=strength)


@pytest.mark.parametrize("corrupt", ["noise", "blur"])
def test_fid_rises_with_the_strength_of_a_corruption(digits_features, corrupt):
    extractor, images, features = digits_features
    g = torch.Generator().manual_seed(0)
    scores = []
    for strength in (1, 2, 3):
        if corrupt == "noise":
            corrupted = (images + 0.25 * strength * torch.randn(images.shape, generator=g)).clamp(-1, 1)
        else:
            corrupted = blur(images, strength)
        scores.append(fid_of(features, extract(extractor, corrupted)[0])["fid"])
    assert scores[0] < scores[1] < scores[2], scores
    assert scores[0] > fid_of(features, features)["fid"]


def test_mode_statistics():
    real = torch.full((10,), 100.0)
    collapsed = torch.zeros(10)
    collapsed[3] = 500
    stats = mode_statistics(collapsed, real)
    assert stats["modes_covered"] == 1 and stats["modes_total"] == 10
    assert stats["mode_kl"] == pytest.approx(np.log(10), rel=0.01)
    assert mode_statistics(real, real)["mode_kl"] == pytest.approx(0.0, abs=1e-9)


def test_stacked_digits_classes_are_three_digit_numbers():
    extractor = load_extractor("digits", channels=3)
    data = load_dataset(DataConfig(name="stacked-digits", image_size=32), split="test")
    images, labels = data.batch(torch.arange(200))
    _, predicted = extract(extractor, images)
    assert extractor.num_features == 384 and extractor.num_classes == 1000
    assert (predicted == labels).float().mean() > 0.97


def test_real_statistics_are_computed_once_per_dataset_and_extractor(tmp_path, monkeypatch):
    calls = []
    original = fid_module.compute_real_statistics
    monkeypatch.setattr(fid_module, "compute_real_statistics", lambda *a: calls.append(1) or original(*a))
    extractor = load_extractor("digits", channels=1)
    cfg = DataConfig(image_size=16)
    first, computed = real_statistics(cfg, extractor, str(tmp_path), labelled=True)
    again, computed_again = real_statistics(cfg, extractor, str(tmp_path), labelled=True)
    assert (computed, computed_again, len(calls)) == (True, False, 1)
    assert torch.equal(first["features"], again["features"]) and first["class_hist"].sum() == 1437
    real_statistics(DataConfig(image_size=32), extractor, str(tmp_path), labelled=True)  # another key
    real_statistics(DataConfig(image_size=16, background="black"), extractor, str(tmp_path), labelled=True)  # too
    assert len(calls) == 3 and len(list((tmp_path / ".raygan_cache").iterdir())) == 3


def test_the_usage_at_the_top_of_evaluator_py_runs(tmp_path):
    from raygan.config import build_config
    from raygan.metrics import evaluator
    from raygan.train.step import GANEngine

    tiny = {"model": {"g_layers": 3, "d_layers": 3, "g_width": 8, "d_width": 8}, "eval": {"num_samples": 100}}
    cfg = build_config({**tiny, "data": {"image_size": 16}})
    engine = GANEngine(cfg, channels=1, num_classes=10)
    names = {"Evaluator": evaluator.Evaluator, "cfg": cfg, "engine": engine, "rank": 0, "world_size": 1}
    names["storage_root"] = str(tmp_path)
    exec(usage(evaluator), names)
    assert {"fid", "kid", "precision", "diversity"} <= set(names["metrics"])


def raygan(*args):
    return subprocess.run([sys.executable, "-m", "raygan.cli", *args], capture_output=True, text=True, timeout=300)


def test_fid_command_on_datasets_and_npz(tmp_path):
    result = raygan("fid", "--real", "digits", "--fake", "digits:test", "--json")
    assert result.returncode == 0, result.stderr
    floor = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 < floor["fid"] < 1.0 and floor["num_real"] == 1437 and floor["num_fake"] == 360
    assert floor["prdc_samples"] == 360 and all(floor[k] > 0.85 for k in ("precision", "recall", "density", "coverage"))
    noise = (np.random.default_rng(0).random((300, 1, 32, 32)) * 255).astype(np.uint8)
    np.savez(tmp_path / "noise.npz", images=noise)
    result = raygan("fid", "--real", "digits:test", "--fake", str(tmp_path / "noise.npz"), "--json")
    assert result.returncode == 0, result.stderr
    noisy = json.loads(result.stdout.strip().splitlines()[-1])
    assert noisy["fid"] > 50 * floor["fid"] and noisy["precision"] == noisy["coverage"] == 0.0


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--real", "digits", "--fake", "/no/such/thing"], "--fake: /no/such/thing: not a built-in dataset"),
        (["--real", "digits", "--fake", "/no/such/thing.npz"], "--fake: /no/such/thing.npz: no such file"),
        (["--real", "digits:validation", "--fake", "digits"], "--real: digits:validation: split must be"),
        (["--real", "digits", "--fake", "stacked-digits"], "stacked-digits has 3 channels, but --real digits has 1 "),
        (["--real", "digits", "--fake", "digits", "--features", "inception"], "--features: inception needs"),
        (["--real", "digits", "--fake", "digits", "--features", "nonsense"], "--features: 'nonsense' is not"),
    ],
)
def test_fid_command_bad_input(args, needle):
    """Its errors name its own flags, not the config keys (data.path, eval.features) the loaders share."""
    result = raygan("fid", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and needle in result.stderr and "Traceback" not in result.stderr


def test_torchscript_extractor_and_folder_spec(tmp_path):
    from PIL import Image

    class MeanColour(torch.nn.Module):
        def forward(self, images):
            return torch.stack([images.mean(dim=(1, 2, 3)), images.std(dim=(1, 2, 3))], dim=1)

    torch.jit.script(MeanColour()).save(str(tmp_path / "features.pt"))
    extractor = load_extractor(str(tmp_path / "features.pt"), channels=3)
    assert extractor.num_features == 2
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(np.full((8, 8, 3), 3 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "truncated.png").write_bytes(b"\x89PNG not really")
    np.savez(tmp_path / "bright.npz", images=np.full((40, 3, 8, 8), 250, np.uint8))
    result = raygan(
        "fid",
        "--real",
        str(folder),
        "--fake",
        str(tmp_path / "bright.npz"),
        "--features",
        str(tmp_path / "features.pt"),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert f"real: {folder} (40 images, 1 undecodable files skipped)" in result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1])["fid"] > 0.5
