"""Seconds of one precision/recall/density/coverage computation on 2,000 real + 2,000 fake features:
raygan's (torch.cdist, float64) with and without the real balls cached, against the authors' prdc package.

    .venv/bin/python benchmarks/prdc_speed.py    # 128-, 256- and 2048-d features (digits, 2 x digits, Inception)
    .venv/bin/python benchmarks/prdc_speed.py --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import time


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)  # the least disturbed run on a shared machine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    from raygan.metrics.prdc import nearest_neighbour_radii, prdc

    torch.set_num_threads(args.threads)
    try:
        import prdc as reference
    except ImportError:
        reference = None
    print(
        f"{args.samples} + {args.samples} samples, {args.threads} torch thread(s), load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    for dim in (128, 256, 2048):
        g = torch.Generator().manual_seed(dim)
        real = torch.randn(args.samples, dim, generator=g)
        fake = torch.randn(args.samples, dim, generator=g) * 1.1
        radii = nearest_neighbour_radii(real)
        full = best_of(args.repeats, lambda real=real, fake=fake: prdc(real, fake))
        cached = best_of(args.repeats, lambda real=real, fake=fake, radii=radii: prdc(real, fake, real_radii=radii))
        line = f"{dim:5d}-d: raygan {full:.3f} s, real balls cached (as in training) {cached:.3f} s"
        if reference is not None:
            with contextlib.redirect_stdout(io.StringIO()):  # it prints the set sizes
                theirs = best_of(args.repeats, lambda r=real, f=fake: reference.compute_prdc(r.numpy(), f.numpy(), 5))
            line += f"; prdc package {theirs:.3f} s"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
