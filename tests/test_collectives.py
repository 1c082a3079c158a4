"""The collectives: no-ops in one process, sums and means over ranks under gloo."""

import datetime

import torch

from raygan import collectives


def test_one_process_is_a_world_of_one():
    assert not collectives.is_distributed() and collectives.world_size() == 1
    tensor = torch.tensor([1.0, 2.0])
    summed = collectives.all_reduce_sum(tensor)
    assert torch.equal(summed, tensor) and summed is not tensor  # a copy, as across ranks
    assert torch.equal(collectives.all_reduce_mean(tensor), tensor)
    collectives.barrier()


def _reduce_on_rank(rank: int, store_file: str, out_file: str) -> None:
    import os

    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=120)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=2, timeout=timeout)
    tensor = torch.tensor([float(rank), 10.0 * rank])
    results = {
        "world_size": collectives.world_size(),
        "sum": collectives.all_reduce_sum(tensor),
        "mean": collectives.all_reduce_mean(tensor),
        "input": tensor,
    }
    collectives.barrier()
    torch.save(results, f"{out_file}.{rank}")
    dist.destroy_process_group()
    os._exit(0)  # gloo's threads may outlive the group; see test_step's average_buffers test


def test_two_ranks_agree_on_sums_and_means(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "rank"
    mp.spawn(_reduce_on_rank, args=(str(tmp_path / "store"), str(out)), nprocs=2)
    for rank in (0, 1):
        result = torch.load(f"{out}.{rank}")
        assert result["world_size"] == 2
        assert torch.equal(result["sum"], torch.tensor([1.0, 10.0]))
        assert torch.equal(result["mean"], torch.tensor([0.5, 5.0]))
        assert torch.equal(result["input"], torch.tensor([float(rank), 10.0 * rank]))  # left alone
