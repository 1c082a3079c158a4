"""Checkpoint size and save / restore time against a local S3 endpoint (moto's server), for the
pytorch/examples DCGAN (64x64x3, widths 64, 5 layers each: 3,576,704 G and 2,765,568 D parameters).

    .venv/bin/python benchmarks/checkpoint_io.py [--repeats 5]

Save = write the checkpoint folder locally + upload it file by file (manifest last) through the same
filesystem Ray is handed; restore = find the run's best checkpoint, check its manifest, download and
load state.pt with weights_only=True. Medians of --repeats.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer

    from raygan import storage
    from raygan.checkpoint import best_checkpoint, checkpoint_name, safe_load, upload_order, write_checkpoint
    from raygan.config import build_config
    from raygan.train.step import GANEngine

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://{host}:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    boto3.client("s3").create_bucket(Bucket="raygan-bench")
    cfg = build_config(
        {
            "data": {"name": "random", "image_size": 64, "channels": 3},
            "model": {"g_layers": 5, "d_layers": 5, "g_width": 64, "d_width": 64},
        }
    )
    engine = GANEngine(cfg, channels=3, num_classes=1, device="cpu")
    fs, run = storage.filesystem("s3://raygan-bench/runs/dcgan64", patient=True)
    saves, restores, size = [], [], 0
    try:
        for i in range(args.repeats):
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as folder:
                write_checkpoint(Path(folder), engine, cfg, {"step": i, "fid": 100.0 - i})
                size = sum(p.stat().st_size for p in Path(folder).iterdir())
                for file in upload_order(Path(folder)):
                    storage.write_file(fs, f"{run}/{checkpoint_name(i)}/{file.name}", file.read_bytes())
            saves.append(time.perf_counter() - start)
            start = time.perf_counter()
            best = best_checkpoint("s3://raygan-bench/runs/dcgan64")
            state = safe_load(storage.read_bytes(storage.join(best, "state.pt")), best)
            GANEngine(cfg, channels=3, num_classes=1, device="cpu").load_state_dict(state)
            restores.append(time.perf_counter() - start)
    finally:
        server.stop()
    print(f"checkpoint size: {size / 1e6:.1f} MB ({torch.get_num_threads()} threads)")
    print(
        f"save to S3:      {statistics.median(saves):.2f} s median of {args.repeats} "
        f"({size / 1e6 / statistics.median(saves):.0f} MB/s)"
    )
    print(f"restore from S3: {statistics.median(restores):.2f} s median (find best, verify, download, load)")


if __name__ == "__main__":
    main()
