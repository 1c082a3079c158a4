"""raygan serve: a real Serve application on the session's Ray, answering real HTTP over loopback.

Two applications share one Serve instance: an unconditional generator with EMA at /u and a conditional
one at /c. Every answer is checked against what `raygan sample` writes for the same arguments.
"""

import base64
import datetime
import io
import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image
from test_export import look_trained
from test_step import make, tiny

from raygan.checkpoint import GENERATOR, MANIFEST, checkpoint_name, write_checkpoint
from raygan.cli import main

MODELS = {"u": ["train.ema=0.9"], "c": ["model.conditional=true"]}  # route prefix -> tiny() overrides
MAX_N = 64  # the applications' --max-n, below the default so that the limit is cheap to test
slow = pytest.mark.slow  # the tests that use `server`: it starts Serve and two replicas, ~15 s on 2 cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_checkpoint(folder: Path, overrides: list[str], fid: float = 1.0) -> str:
    """A checkpoint whose G spreads its outputs as a trained one does (untrained, they sit near 0)."""
    cfg = tiny(*overrides)
    engine, _ = make(cfg)
    g = torch.Generator().manual_seed(0)
    look_trained(
        engine.sampler,
        torch.randn(32, 16, generator=g),
        torch.arange(32) % 10 if "conditional" in str(overrides) else None,
    )
    return str(write_checkpoint(folder / checkpoint_name(0), engine, cfg, {"fid": fid}))


@pytest.fixture(scope="module")
def server(ray_session, tmp_path_factory):
    """{"url": base URL, "checkpoints": {prefix: path}}; Serve is shut down after the module."""
    from ray import serve

    from raygan.serve.app import application

    root = tmp_path_factory.mktemp("serve")
    checkpoints = {prefix: tiny_checkpoint(root / prefix, overrides) for prefix, overrides in MODELS.items()}
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        for prefix, checkpoint in checkpoints.items():
            serve.run(application(checkpoint, max_n=MAX_N), name=prefix, route_prefix=f"/{prefix}")
        yield {"url": f"http://127.0.0.1:{port}", "checkpoints": checkpoints}
    finally:
        serve.shutdown()


def get(server, path: str, **params) -> requests.Response:
    return requests.get(server["url"] + path, params=params, timeout=60)


def sample_files(checkpoint: str, out: Path, *args: str) -> Path:
    """`raygan sample CHECKPOINT ARGS --out OUT`: OUT without its suffix."""
    assert main(["sample", checkpoint, *args, "--out", str(out)]) == 0
    return out


def assert_npz_equal(body: bytes, path: Path) -> None:
    served, written = np.load(io.BytesIO(body)), np.load(path)
    assert sorted(served.files) == sorted(written.files) == ["images", "labels"]
    assert served["images"].dtype == np.uint8
    np.testing.assert_array_equal(served["images"], written["images"])
    np.testing.assert_array_equal(served["labels"], written["labels"])


@slow
def test_healthz_and_info(server):
    assert get(server, "/u/healthz").json() == {"status": "ok"}
    info = get(server, "/c/info").json()
    assert {k: info[k] for k in ("resolution", "channels", "classes", "latent_dim", "step", "fid")} == {
        "resolution": 16,
        "channels": 1,
        "classes": 10,
        "latent_dim": 16,
        "step": 0,
        "fid": 1.0,
    }
    assert info["checkpoint"] == server["checkpoints"]["c"] and info["max_n"] == MAX_N
    assert get(server, "/u/info").json()["classes"] == 0 and get(server, "/u/info").json()["ema"] is True


@slow
@pytest.mark.parametrize(
    "prefix, params, flags",
    [
        ("u", {"n": 9, "seed": 7, "truncation": 0.7}, ["--num", "9", "--seed", "7", "--truncation", "0.7"]),
        ("c", {"n": 12, "seed": 3}, ["--num", "12", "--seed", "3"]),  # classes in turn
        ("c", {"n": 5, "seed": 3, "label": 4}, ["--num", "5", "--seed", "3", "--label", "4"]),
    ],
)
def test_the_same_seed_draws_what_raygan_sample_writes(server, tmp_path, prefix, params, flags):
    out = sample_files(server["checkpoints"][prefix], tmp_path / "s", *flags)
    npz = get(server, f"/{prefix}/sample", **params, format="npz")
    assert npz.status_code == 200
    assert_npz_equal(npz.content, out.with_suffix(".npz"))
    png = get(server, f"/{prefix}/sample", **params)  # png is the default format
    assert png.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(png.content))), np.asarray(Image.open(out.with_suffix(".png")))
    )


@slow
def test_json_holds_a_png_per_image(server, tmp_path):
    body = get(server, "/c/sample", n=3, seed=11, label=2, format="json").json()
    written = np.load(
        sample_files(
            server["checkpoints"]["c"], tmp_path / "s", "--num", "3", "--seed", "11", "--label", "2"
        ).with_suffix(".npz")
    )
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(b)))) for b in body["images"]])
    np.testing.assert_array_equal(decoded, written["images"][:, 0])  # one channel: PNGs in mode L
    assert body["labels"] == [2, 2, 2] and body["seed"] == 11 and body["n"] == 3


@slow
def test_interpolate_is_raygan_samples_walk(server, tmp_path):
    response = get(server, "/u/interpolate", n=4, seed=7, keyframes=3, frames=5)
    assert response.status_code == 200 and response.headers["content-type"] == "image/gif"
    out = tmp_path / "walk"
    flags = ["--num", "4", "--seed", "7", "--interpolate", "3", "--frames", "5"]
    assert main(["sample", server["checkpoints"]["u"], *flags, "--out", str(out)]) == 0
    assert response.content == out.with_suffix(".gif").read_bytes()
    assert Image.open(io.BytesIO(response.content)).n_frames == 15
    assert get(server, "/u/interpolate", seed=7, frames=24).status_code == 200  # the README's line


@slow
def test_concurrent_requests_each_get_their_own_seeds(server):
    """Batched on the replica into one forward, each request still gets its own seed's images."""
    seeds = list(range(12))
    with ThreadPoolExecutor(len(seeds)) as pool:
        together = list(pool.map(lambda s: get(server, "/u/sample", n=3, seed=s, format="npz").content, seeds))
    for seed, body in zip(seeds, together):
        alone = np.load(io.BytesIO(get(server, "/u/sample", n=3, seed=seed, format="npz").content))["images"]
        batched = np.load(io.BytesIO(body))["images"]
        # one forward over several requests may round a pixel the other way: never by more than a level
        assert np.abs(batched.astype(int) - alone.astype(int)).max() <= 1
        assert (batched == alone).mean() > 0.99


BAD = [
    ("u", "/sample", {"n": 0}, "n"),
    ("u", "/sample", {"n": MAX_N + 1}, "n"),
    ("u", "/sample", {"n": "many"}, "n"),
    ("u", "/sample", {"seed": "1.5"}, "seed"),
    ("u", "/sample", {"seed": -1}, "seed"),
    ("u", "/sample", {"truncation": 0}, "truncation"),
    ("u", "/sample", {"truncation": 1.5}, "truncation"),
    ("u", "/sample", {"truncation": "nan"}, "truncation"),
    ("u", "/sample", {"truncation": "high"}, "truncation"),
    ("u", "/sample", {"label": 1}, "label"),  # an unconditional model
    ("c", "/sample", {"label": 10}, "label"),  # classes 0..9
    ("c", "/sample", {"label": "cat"}, "label"),
    ("c", "/sample", {"format": "bmp"}, "format"),
    ("c", "/sample", {"num": 4}, "num"),  # n misspelt
    ("c", "/interpolate", {"frames": 0}, "frames"),
    ("c", "/interpolate", {"keyframes": 1}, "keyframes"),
    ("c", "/interpolate", {"format": "png"}, "format"),
]


@slow
@pytest.mark.parametrize("prefix, path, params, name", BAD, ids=[f"{p}{path}-{params}" for p, path, params, _ in BAD])
def test_bad_input_is_400_naming_the_parameter_and_serving_goes_on(server, prefix, path, params, name):
    response = get(server, f"/{prefix}{path}", **params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error.startswith(f"{name}: "), error
    assert get(server, f"/{prefix}/sample", n=2, seed=1).status_code == 200


@slow
def test_the_page_uses_the_api_and_nothing_outside(server):
    page = get(server, "/c/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for needle in ('id="grid"', 'id="seed"', "new seed", 'type="range"', 'id="label"', "interpolate", '"info"'):
        assert needle in page.text, needle
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN, no font, no absolute URL


def _crafted(folder: Path) -> str:
    """A complete checkpoint whose generator.pt is a pickle of a class that weights_only refuses."""
    checkpoint = Path(tiny_checkpoint(folder, []))
    torch.save({"weight": datetime.date(2026, 1, 1)}, checkpoint / GENERATOR)
    sizes = {p.name: p.stat().st_size for p in checkpoint.iterdir() if p.name != MANIFEST}
    (checkpoint / MANIFEST).write_text(json.dumps(sizes))
    return str(checkpoint)


@pytest.mark.parametrize("case", ["missing", "crafted", "port in use", "no replicas", "max below min"])
def test_bad_input_exits_2_before_ray_starts(tmp_path, case):
    checkpoint = str(tmp_path / "nowhere") if case == "missing" else None
    if case == "crafted":
        checkpoint = _crafted(tmp_path)
    elif case != "missing":
        checkpoint = tiny_checkpoint(tmp_path, [])
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    args = ["--port", str(busy.getsockname()[1] if case == "port in use" else free_port())]
    if case == "no replicas":
        args += ["--replicas", "0"]
    if case == "max below min":
        args += ["--replicas", "2", "--max-replicas", "1"]
    started = time.monotonic()
    with busy:
        result = subprocess.run(
            [sys.executable, "-m", "raygan.cli", "serve", checkpoint, *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    expected = {
        "missing": checkpoint,
        "crafted": GENERATOR,
        "port in use": "--port",
        "no replicas": "--replicas",
        "max below min": "--max-replicas",
    }
    assert expected[case] in lines[0]
    assert "Ray" not in result.stderr and time.monotonic() - started < 60


def test_a_sweep_resolves_to_its_best_trials_best_checkpoint(tmp_path):
    from raygan.checkpoint import resolve_checkpoint

    runs = tmp_path / "sweep" / "runs"
    best = None
    for trial, fids in (("t1", (5.0, 4.0)), ("t2", (3.0, 6.0)), ("t3", (None,))):
        for step, fid in enumerate(fids):
            path = tiny_checkpoint(runs / trial, [], fid)
            Path(path).rename(runs / trial / checkpoint_name(step + 1))
            best = str(runs / trial / checkpoint_name(step + 1)) if fid == 3.0 else best
        (runs / trial / "metrics.jsonl").write_text("")
    (tmp_path / "sweep" / "summary.json").write_text("[]")
    assert resolve_checkpoint(str(tmp_path / "sweep")) == best


@slow
def test_raygan_serve_serves_until_ctrl_c(tmp_path):
    """The command as a user runs it: its own Ray, the URL on stdout, a clean stop on SIGINT."""
    import os
    import signal

    checkpoint = tiny_checkpoint(tmp_path / "run", ["model.conditional=true"])
    port = free_port()
    command = [sys.executable, "-m", "raygan.cli", "serve", str(tmp_path / "run"), "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()  # blocks until Serve is up, or the command ends
        assert f"http://127.0.0.1:{port}/" in line and checkpoint in line, line + server.stderr.read()[-3000:]
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=30).json() == {"status": "ok"}
        grid = requests.get(f"http://127.0.0.1:{port}/sample", params={"n": 4, "label": 3}, timeout=30)
        assert grid.status_code == 200 and grid.headers["content-type"] == "image/png"
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=120)
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
    assert server.returncode == 0, err[-3000:]
    assert out.strip().splitlines()[-1] == "stopped"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
