"""The quality recipes' checks: the independent digit judge of conditional samples."""

import numpy as np
import pytest
import torch

from raygan.data import digits
from raygan.metrics.label_check import DigitClassifier, accuracy_by_class, label_accuracy, real_spread


@pytest.fixture(scope="module")
def judge():
    return DigitClassifier.fit()


def test_the_judge_reads_real_digits_at_training_size(judge):
    """Real test digits upsampled to 32x32 (as raygan trains on them) and brought back to 8x8."""
    assert judge.test_accuracy >= 0.97
    test = digits("test", 32)
    predicted = judge.predict(test.images)
    result = accuracy_by_class(predicted, test.labels.numpy(), 10)
    assert result["accuracy"] >= 0.95 and min(result["per_class"]) >= 0.85
    shuffled = np.random.default_rng(0).permutation(test.labels.numpy())
    assert accuracy_by_class(predicted, shuffled, 10)["accuracy"] < 0.25


class RealDigitsAsGenerator(torch.nn.Module):
    """A stand-in G that answers label k with real test digits of class (k + shift) % 10."""

    latent_dim = 4

    def __init__(self, shift: int):
        super().__init__()
        self.test, self.shift = digits("test", 32), shift

    def forward(self, z, labels):
        wanted = (labels + self.shift) % 10
        pools = [torch.nonzero(self.test.labels == k).flatten() for k in range(10)]
        picks = torch.stack([pools[k][i % len(pools[k])] for i, k in enumerate(wanted.tolist())])
        return self.test.images[picks]


def test_label_accuracy_scores_what_was_asked_for(judge):
    right = label_accuracy(RealDigitsAsGenerator(shift=0), judge, per_class=30)
    assert right["accuracy"] >= 0.95 and len(right["per_class"]) == 10
    wrong = label_accuracy(
        RealDigitsAsGenerator(shift=1), judge, per_class=30
    )  # every label answered by the next digit
    assert wrong["accuracy"] < 0.1


class OneImagePerLabel(RealDigitsAsGenerator):
    """A conditional G that ignores z: the first real test digit of the label, every time."""

    def forward(self, z, labels):
        firsts = [torch.nonzero(self.test.labels == k)[0, 0] for k in labels.tolist()]
        return self.test.images[torch.stack(firsts)]


def test_within_label_spread_is_the_real_digits_for_real_digits_and_zero_when_z_is_ignored(judge):
    real = real_spread()
    assert 0.1 < real < 0.5  # digits of one class differ, far less than a digit differs from blank paper
    assert label_accuracy(RealDigitsAsGenerator(shift=0), judge, per_class=150)["spread"] == pytest.approx(
        real, rel=0.1
    )
    assert label_accuracy(OneImagePerLabel(shift=0), judge, per_class=30)["spread"] == 0.0


@pytest.mark.slow  # 1,000 training steps: 15 s
def test_a_short_conditional_run_follows_labels_and_still_uses_z(judge):
    """Test-sized conditional digits (16x16, 1,000 steps, no Ray): the samples follow the requested
    labels well above chance, and samples of one label still differ (a conditional G that ignores z
    draws one image per label: its per-pixel spread within a class was under a tenth of the data's)."""
    from raygan.config import build_config
    from raygan.data import indexed_batches, load_dataset
    from raygan.images import generate
    from raygan.train.step import GANEngine

    torch.set_num_threads(2)
    cfg = build_config(
        {
            "data": {"image_size": 16},
            "model": {
                "g_layers": 3,
                "d_layers": 3,
                "g_width": 32,
                "d_width": 32,
                "latent_dim": 64,
                "conditional": True,
            },
        }
    )
    dataset = load_dataset(cfg.data)
    engine = GANEngine(cfg, dataset.channels, dataset.num_classes)
    batches = indexed_batches(dataset, cfg.train.batch_size, cfg.seed)
    for k in range(1000):
        engine.train_step([batches(k)])
    result = label_accuracy(engine.sampler, judge, per_class=50)
    assert result["accuracy"] >= 0.5, result
    threes = generate(
        engine.sampler, torch.randn(200, 64, generator=torch.Generator().manual_seed(0)), torch.full((200,), 3)
    )
    real_threes = dataset.images[dataset.labels == 3]
    assert threes.std(0).mean() >= 0.3 * real_threes.std(0).mean()


class RealStackedAsGenerator(torch.nn.Module):
    """A stand-in unconditional G that answers with real stacked-digits:test images (or one, repeated)."""

    latent_dim = 4

    def __init__(self, repeat_one: bool = False):
        super().__init__()
        from raygan.data import dataset_from_spec

        self.test, self.repeat_one, self.served = dataset_from_spec("stacked-digits:test", 32), repeat_one, 0

    def forward(self, z, labels=None):
        start = 0 if self.repeat_one else self.served
        indices = torch.arange(start, start + len(z)) if not self.repeat_one else torch.zeros(len(z), dtype=torch.long)
        self.served += len(z)
        return self.test.batch(indices)[0]


def test_mode_coverage_counts_stacked_modes_and_their_spread():
    from raygan.metrics.label_check import mode_coverage, mode_histogram_statistics

    uniform = mode_histogram_statistics(torch.full((1000,), 10))
    assert uniform["modes_covered"] == 1000 and abs(uniform["mode_kl"]) < 1e-9
    real = mode_coverage(RealStackedAsGenerator(), num_samples=3000)
    assert real["modes_covered"] >= 900 and real["mode_kl"] < 0.25, real  # 3,000 draws of 1,000 modes: ~950
    collapsed = mode_coverage(RealStackedAsGenerator(repeat_one=True), num_samples=500)
    assert collapsed["modes_covered"] == 1 and collapsed["mode_kl"] == pytest.approx(np.log(1000))


def test_legibility_is_high_on_real_digits_and_low_on_blends():
    from raygan.data import dataset_from_spec
    from raygan.metrics.label_check import legibility

    real = dataset_from_spec("stacked-digits:test", 32).batch(torch.arange(600))[0]
    assert min(legibility(real)) > 0.85
    blends = (real[:300] + real[300:]) / 2  # two digits drawn over each other in every channel
    assert max(legibility(blends)) < min(legibility(real)) - 0.2


@pytest.mark.slow  # the benchmark scripts end to end, each in its own process: 15-30 s
def test_recipe_variants_scores_each_variant_at_each_check(tmp_path):
    """benchmarks/recipe_variants.py: two variants in their own processes, a row per variant per check."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "rows.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            str(root / "benchmarks" / "recipe_variants.py"),
            str(root / "tune_configs" / "digits_fid.yaml"),
            "--steps",
            "4",
            "--check-every",
            "2",
            "--out",
            str(out),
            "--save",
            str(tmp_path / "runs"),
            "--variant",
            "recipe",
            "--variant",
            "plain",
            "train.augment=[]",
            "model.g_width=8",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["variant"], r["step"]) for r in rows) == [("plain", 2), ("plain", 4), ("recipe", 2), ("recipe", 4)]
    assert {tuple(r["overrides"]) for r in rows} == {(), ("train.augment=[]", "model.g_width=8")}
    for r in rows:
        assert r["fid"] > 0 and r["ratio"] == pytest.approx(r["fid"] / 0.088, rel=0.1) and r["s_per_step"] > 0
    assert "plain" in done.stdout and "ratio" in done.stdout
    from raygan.checkpoint import load_generator

    G, cfg, meta = load_generator(str(tmp_path / "runs" / "plain" / "checkpoint_0000004"))
    assert meta["step"] == 4 and cfg.model.g_width == 8 and cfg.train.augment == ()
    checkpoint = tmp_path / "runs" / "plain" / "checkpoint_0000004"
    check = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "digits_fid.py"), str(checkpoint)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 1 and "NOT met" in check.stdout, check.stdout + check.stderr[-2000:]


@pytest.mark.slow  # the benchmark scripts end to end, each in its own process: 15-30 s
def test_stacked_check_scores_a_native_8x8_checkpoint(tmp_path):
    """The stacked recipe's size (8x8, 3 layers) through recipe_variants' check and benchmarks/stacked_modes.py."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "rows.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            str(root / "benchmarks" / "recipe_variants.py"),
            str(root / "tune_configs" / "stacked_modes.yaml"),
            "--steps",
            "2",
            "--check-every",
            "2",
            "--out",
            str(out),
            "--save",
            str(tmp_path / "runs"),
            "--variant",
            "tiny",
            "model.g_width=8",
            "model.d_width=8",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["step"] == 2 and 1 <= row["modes"] <= 1000 and row["kl"] > 0.1 and len(row["legibility"]) == 3
    checkpoint = tmp_path / "runs" / "tiny" / "checkpoint_0000002"
    check = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "stacked_modes.py"), str(checkpoint)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 1 and "NOT met" in check.stdout, check.stdout + check.stderr[-2000:]
    assert "median confidence" in check.stdout and "real stacked-digits:test: 1000 / 1000 modes" in check.stdout


def test_digit_mix_reads_each_channel_of_the_mode_histogram():
    from raygan.metrics.label_check import digit_mix, mode_histogram_statistics

    hist = torch.zeros(1000, dtype=torch.long)
    hist[100 * 3 + 10 * 1 + 7] = 30  # modes 317 and 311: channel 0 always 3, channel 1 always 1
    hist[100 * 3 + 10 * 1 + 1] = 10
    mix = digit_mix(hist)
    assert mix.shape == (3, 10)
    assert mix[0, 3] == 1 and mix[1, 1] == 1 and mix[2, 7] == pytest.approx(0.75) and mix[2, 1] == pytest.approx(0.25)
    stats = mode_histogram_statistics(hist)
    assert stats["digit_mix_kl"][0] == pytest.approx(np.log(10))
    assert stats["digit_mix_kl"][2] == pytest.approx(np.log(10) + 0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    assert digit_mix(torch.arange(10)).tolist() == [[x / 45 for x in range(10)]]  # one channel


@pytest.mark.slow  # the benchmark scripts end to end, each in its own process: 15-30 s
def test_emoji_check_scores_a_tiny_checkpoint(tmp_path):
    """The emoji recipe through recipe_variants' check and benchmarks/emoji_quality.py: a 2-step G is far
    from the blur baseline, and without a run's records its health cannot count as met."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "rows.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            str(root / "benchmarks" / "recipe_variants.py"),
            str(root / "tune_configs" / "emoji.yaml"),
            "--steps",
            "2",
            "--check-every",
            "2",
            "--out",
            str(out),
            "--save",
            str(tmp_path / "runs"),
            "--variant",
            "tiny",
            "model.g_width=8",
            "model.d_width=8",
            "data.image_size=16",
            "model.g_layers=3",
            "model.d_layers=3",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["step"] == 2 and row["ratio"] > 1 and row["kl"] > 0
    check = subprocess.run(
        [
            sys.executable,
            str(root / "benchmarks" / "emoji_quality.py"),
            str(tmp_path / "runs" / "tiny" / "checkpoint_0000002"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert check.returncode == 1 and "NOT met" in check.stdout, check.stdout + check.stderr[-2000:]
    assert "blur baseline ( 8px)" in check.stdout and "no evaluation records" in check.stdout


@pytest.mark.slow  # two scripts end to end: ~40 s
def test_the_plain_dcgan_peer_is_scored_like_a_run(tmp_path):
    """benchmarks/plain_dcgan.py writes samples that benchmarks/emoji_quality.py scores with the same floor and
    baselines as a run; a few seconds of training are far from the blur baseline."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    npz = tmp_path / "plain.npz"
    trained = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "plain_dcgan.py"), "--minutes", "0.05", "--threads", "1"]
        + ["--samples", "3028", "--out", str(npz)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    images = np.load(npz)["images"]
    assert images.shape == (3028, 3, 32, 32) and images.dtype == np.uint8
    check = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "emoji_quality.py"), str(npz)], capture_output=True, text=True
    )
    assert check.returncode == 1 and "NOT met" in check.stdout, check.stdout + check.stderr[-2000:]
    assert "noise floor:          FID   29." in check.stdout and "no evaluation records" in check.stdout
