"""The quality recipes' checks: the independent digit judge, and a test-sized conditional run."""

import numpy as np
import pytest
import torch

from raygan.config import load_config
from raygan.data import digits, indexed_batches, load_dataset
from raygan.metrics.label_check import DigitClassifier, accuracy_by_class, label_accuracy
from raygan.train.step import GANEngine


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


def test_a_short_conditional_run_draws_the_requested_digits(judge):
    """The digits_cgan recipe, test-sized (16x16, a few hundred steps, no Ray): far above chance (10%)."""
    cfg = load_config("tune_configs/digits_cgan.yaml", ["data.image_size=16", "model.g_layers=3", "model.d_layers=3",
                                                        "train.ema=0.99"])  # fmt: skip
    torch.set_num_threads(2)
    dataset = load_dataset(cfg.data)
    engine = GANEngine(cfg, dataset.channels, dataset.num_classes)
    batches = indexed_batches(dataset, cfg.train.batch_size, cfg.seed)
    for k in range(TEST_STEPS):
        engine.train_step([batches(k)])
    result = label_accuracy(engine.sampler, judge, per_class=50)
    assert result["accuracy"] >= 0.6, result
