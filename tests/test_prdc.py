"""Precision, recall, density and coverage on sets with known answers, against the authors' code, and
gathered across ranks in the evaluator exactly as one process computes them."""

import contextlib
import io

import pytest
import torch

from raygan.config import build_config
from raygan.data import load_dataset
from raygan.metrics.evaluator import Evaluator
from raygan.metrics.prdc import KEYS, evenly_spaced, nearest_neighbour_radii, prdc


def cloud(n, dim=16, seed=0, offset=0.0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) + offset


FAR = 1000.0  # clusters this far apart share no neighbours


def test_a_set_against_itself_scores_one_everywhere():
    real = cloud(500)
    scores = prdc(real, real.clone())
    assert (scores["precision"], scores["recall"], scores["coverage"]) == (1.0, 1.0, 1.0)
    assert scores["density"] == pytest.approx(1.0, abs=0.01)  # each ball holds its centre and k-1 neighbours


def test_fakes_from_one_of_two_real_clusters_are_faithful_but_cover_half():
    """Mode dropping: every fake is a real sample (precision 1, density 1), half the reals are missed."""
    cluster_a, cluster_b = cloud(300, seed=1), cloud(300, seed=2, offset=FAR)
    scores = prdc(torch.cat([cluster_a, cluster_b]), cluster_a.clone())
    assert (scores["precision"], scores["recall"], scores["coverage"]) == (1.0, 0.5, 0.5)
    assert scores["density"] == pytest.approx(1.0, abs=0.01)


def test_fakes_with_a_far_cluster_of_their_own_have_half_the_precision():
    """The other way round: the reals are a subset of the fakes, whose other half lies far off."""
    real = cloud(300, seed=1)
    scores = prdc(real, torch.cat([real.clone(), cloud(300, seed=2, offset=FAR)]))
    assert (scores["precision"], scores["recall"], scores["coverage"]) == (0.5, 1.0, 1.0)
    assert scores["density"] == pytest.approx(0.5, abs=0.01)


def test_far_apart_sets_score_zero():
    scores = prdc(cloud(300, seed=1), cloud(300, seed=2, offset=FAR))
    assert scores == dict.fromkeys(KEYS, 0.0)


@pytest.mark.parametrize("dim, scale, shift", [(8, 1.0, 0.0), (64, 1.2, 0.1), (128, 0.7, 0.3)])
def test_equals_the_authors_implementation(dim, scale, shift):
    reference = pytest.importorskip("prdc")  # clovaai/prdc, a dev dependency
    real, fake = cloud(700, dim, seed=dim), cloud(600, dim, seed=dim + 1) * scale + shift
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the set sizes
        expected = reference.compute_prdc(
            real.double().numpy(), fake.double().numpy(), nearest_k=5
        )  # in float64 as ours
    assert prdc(real, fake) == pytest.approx({k: float(v) for k, v in expected.items()}, abs=1e-12)


def test_cached_real_radii_give_the_same_scores():
    real, fake = cloud(400, seed=1), cloud(400, seed=2) * 1.1
    assert prdc(real, fake, real_radii=nearest_neighbour_radii(real)) == prdc(real, fake)


def test_too_few_samples_and_mismatched_features_are_errors():
    with pytest.raises(ValueError, match="more than k=5"):
        prdc(cloud(5), cloud(50))
    with pytest.raises(ValueError, match="dimensions"):
        prdc(cloud(50, dim=4), cloud(50, dim=5))


def test_evenly_spaced_keeps_the_ends_and_is_fixed():
    rows = torch.arange(10.0)[:, None]
    assert evenly_spaced(rows, 4).flatten().tolist() == [0.0, 3.0, 6.0, 9.0]
    assert evenly_spaced(rows, 20) is rows


# ---------------------------------------------------------------------------------------------
# in the evaluator, over ranks

NUM_SAMPLES = 1501  # more than the 1,437 real digits: rank 1 holds only some of the scored samples, unequal shares


class NoisyDigits:
    """Stands in for a generator: test digits with a little fixed noise."""

    def __init__(self):
        digits = load_dataset(build_config({}).data, split="test").images
        noise = 0.05 * torch.randn(NUM_SAMPLES, *digits.shape[1:], generator=torch.Generator().manual_seed(0))
        self.images = (digits[torch.arange(NUM_SAMPLES) % len(digits)] + noise).clamp(-1, 1)

    def generate(self, z, labels=None):
        return self.images[self.start : self.start + len(z)]


def _evaluate_on_rank(rank: int, world_size: int, store_file: str, cache: str, out_file: str) -> None:
    import torch.distributed as dist

    if world_size > 1:
        dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world_size)
    cfg = build_config({"eval": {"num_samples": NUM_SAMPLES}})
    evaluator = Evaluator(cfg, channels=1, num_classes=10, rank=rank, world_size=world_size, storage_root=cache)
    engine = NoisyDigits()
    engine.start = evaluator.share_start  # this rank's share of the fixed latents
    metrics = evaluator(engine)
    torch.save({key: metrics[key] for key in KEYS}, f"{out_file}.{rank}")
    if world_size > 1:
        dist.destroy_process_group()


def test_two_ranks_score_what_one_process_scores(tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "scores")
    _evaluate_on_rank(0, 1, "", str(tmp_path / "cache"), f"{out}-single")
    mp.spawn(_evaluate_on_rank, args=(2, str(tmp_path / "store"), str(tmp_path / "cache"), out), nprocs=2)
    single = torch.load(f"{out}-single.0")
    assert torch.load(f"{out}.0") == single and torch.load(f"{out}.1") == single  # every rank reports the same
    assert 0.2 < single["precision"] < 1 and 0.2 < single["coverage"] < 1  # noisy digits: neither 0 nor perfect
