"""raygan serve: a real Serve application on the session's Ray, answering real HTTP over loopback.

Two applications share one Serve instance: an unconditional generator with EMA at /u and a conditional
one at /c. Every answer is checked against what `raygan sample` writes for the same arguments.
"""

import base64
import datetime
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pytest
import requests
import torch
from PIL import Image
from test_export import look_trained
from test_report import CHROMIUM, needs_chromium
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


class DevTools:
    """Headless Chromium driven over the DevTools protocol (a websocket): one page, Runtime.evaluate on it.
    Chromium runs in its own process group, killed by its id on close."""

    def __init__(self, profile: Path, timeout: float = 60):
        from websockets.sync.client import connect

        self.timeout, self.ids, self.session, self.socket, self.received = timeout, 0, None, None, []
        profile.mkdir(parents=True, exist_ok=True)
        command = [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--remote-debugging-port=0",  # Chromium picks a free port and writes it to DevToolsActivePort
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        self.log = open(profile / "chromium.log", "wb")  # noqa: SIM115 (closed in close())
        self.process = subprocess.Popen(command, stdout=self.log, stderr=self.log, start_new_session=True)
        try:
            active = profile / "DevToolsActivePort"  # "PORT\n/devtools/browser/ID"
            deadline = time.monotonic() + timeout
            while len(lines := (active.read_text().splitlines() if active.exists() else [])) < 2:
                assert self.process.poll() is None, (profile / "chromium.log").read_text()[-3000:]
                assert time.monotonic() < deadline, f"no DevToolsActivePort in {timeout} s"
                time.sleep(0.1)
            url = f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            self.socket = connect(url, max_size=None, open_timeout=timeout, proxy=None).__enter__()
        except BaseException:
            self.close()
            raise

    def send(self, method: str, session: str | None = None, **params) -> dict:
        """A command's result; the events that come meanwhile are kept for `events`."""
        self.ids += 1
        message = {"id": self.ids, "method": method, "params": params}
        self.socket.send(json.dumps({**message, "sessionId": session} if session else message))
        deadline = time.monotonic() + self.timeout
        while True:
            answer = json.loads(self.socket.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if answer.get("id") == self.ids:
                assert "error" not in answer, f"{method}: {answer['error']}"
                return answer["result"]
            if "method" in answer:
                self.received.append(answer)

    def events(self, method: str, count: int) -> list[dict]:
        """The next `count` events named method, waited for."""
        deadline = time.monotonic() + self.timeout
        while len(found := [e for e in self.received if e["method"] == method]) < count:
            assert time.monotonic() < deadline, f"{len(found)} of {count} {method} events in {self.timeout} s"
            try:
                message = json.loads(self.socket.recv(timeout=1))
            except TimeoutError:
                continue
            if "method" in message:
                self.received.append(message)
        for event in found[:count]:
            self.received.remove(event)
        return found[:count]

    def open(self, url: str) -> None:
        """A new tab at url, once its document (not the images it fetches later) has loaded."""
        target = self.send("Target.createTarget", url=url)["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.wait(f"location.href === {json.dumps(url)} && document.readyState === 'complete'", f"{url} loaded")

    def evaluate(self, expression: str):
        """The value of a JavaScript expression on the page (a promise is awaited)."""
        result = self.send(
            "Runtime.evaluate", self.session, expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result["result"].get("description", result["exceptionDetails"])
        return result["result"].get("value")

    def wait(self, expression: str, what: str, timeout: float = 120):
        """The first truthy value of expression, polled; AssertionError naming `what` after timeout s."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            assert time.monotonic() < deadline, f"{what}: not in {timeout} s"
            time.sleep(0.2)
        return value

    def close(self) -> None:
        try:
            if self.socket is not None:
                self.socket.__exit__(None, None, None)
        finally:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # the browser and its renderers: its own group
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)
            self.log.close()


@pytest.fixture
def browser(tmp_path):
    devtools = DevTools(tmp_path / "chromium-profile")
    try:
        yield devtools
    finally:
        devtools.close()


# The grid <img> as the page's script marks it, and its pixels once the image it asked for has loaded
GRID = """(() => {
  const img = document.getElementById("grid");
  const state = {query: img.dataset.query || "", loaded: img.dataset.loaded || "", width: img.naturalWidth,
                 complete: img.complete, error: document.getElementById("error").textContent};
  if (state.loaded !== "yes" || !img.complete || !img.naturalWidth) return null;
  const canvas = document.createElement("canvas");
  [canvas.width, canvas.height] = [img.naturalWidth, img.naturalHeight];
  canvas.getContext("2d").drawImage(img, 0, 0);
  return {...state, pixels: canvas.toDataURL("image/png")};
})()"""


def grid_shown(browser: DevTools, server, prefix: str, **expected: str) -> np.ndarray:
    """The grid's pixels once the page has loaded the image for a query with `expected`'s values; they
    are the pixels /sample serves for that query."""
    wanted = " && ".join(f'q.get("{k}") === "{v}"' for k, v in expected.items()) or "true"
    state = browser.wait(
        f"(() => {{ const q = new URLSearchParams(document.getElementById('grid').dataset.query || '');"
        f" return {wanted} ? {GRID} : null; }})()",
        f"the grid for {expected}",
    )
    assert state["error"] == "" and state["width"] > 0, state
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(state["pixels"].split(",", 1)[1]))).convert("RGBA"))
    query = {k: v[0] for k, v in parse_qs(state["query"]).items()}
    served = get(server, f"/{prefix}/sample", **query)
    assert served.status_code == 200, served.text
    np.testing.assert_array_equal(shown, np.asarray(Image.open(io.BytesIO(served.content)).convert("RGBA")))
    return shown


# Counts the page's /sample requests and the answers it has read (instruments window.fetch)
COUNT_SAMPLES = """(() => {
  window.samples = {asked: 0, read: 0};
  const fetch = window.fetch;
  window.fetch = (url, ...rest) => {
    if (!String(url).includes("/sample?")) return fetch(url, ...rest);
    window.samples.asked++;
    return fetch(url, ...rest).then((response) => {
      const blob = response.blob.bind(response);
      response.blob = () => blob().then((body) => { window.samples.read++; return body; });
      return response;
    });
  };
})()"""


def drag_answered_newest_first(browser: DevTools, element: str, values: list[str]) -> None:
    """A drag over values whose /sample answers reach the page newest first, the older ones after it:
    as when the server is slow with the first. Returns once the page has read every answer."""
    browser.evaluate(COUNT_SAMPLES)
    browser.send("Fetch.enable", browser.session, patterns=[{"urlPattern": "*/sample?*", "requestStage": "Response"}])
    try:
        set_value(browser, element, values)
        asked = browser.evaluate("window.samples.asked")
        held = browser.events("Fetch.requestPaused", asked)  # answered by the server, held from the page
        newest = [e for e in held if parse_qs(e["params"]["request"]["url"].split("?")[1])[element] == [values[-1]]]
        assert newest and len(newest) < len(held), [e["params"]["request"]["url"] for e in held]
        for group in (newest, [e for e in held if e not in newest]):
            for event in group:
                browser.send("Fetch.continueRequest", browser.session, requestId=event["params"]["requestId"])
            read = len(newest) if group is newest else asked
            browser.wait(f"window.samples.read === {read}", f"the page reading {read} answers")
    finally:
        browser.send("Fetch.disable", browser.session)
    query = parse_qs(browser.evaluate("document.getElementById('grid').dataset.query"))
    assert query[element] == [values[-1]], f"an older answer, come back last, replaced the newest: {query}"


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape != b.shape or bool((a != b).any())


def set_value(browser: DevTools, element: str, values: list[str]) -> None:
    """Values set one after the other as a user's drag does: an `input` event for each, `change` at the end."""
    browser.evaluate(
        f"(() => {{ const e = document.getElementById('{element}');"
        f" for (const v of {json.dumps(values)}) {{ e.value = v; e.dispatchEvent(new Event('input')); }}"
        " e.dispatchEvent(new Event('change')); })()"
    )


@slow
@needs_chromium
@pytest.mark.parametrize("prefix", ["u", "c"])
def test_the_page_in_chromium_redraws_on_the_slider_and_the_class(server, browser, prefix):
    """The page in a real browser: the grid loads, and a drag of the truncation slider (and, for the
    conditional model, a class) asks for, loads and shows the new images, the last asked for also when
    the answers to the drag's earlier requests come back after it."""
    browser.open(f"{server['url']}/{prefix}/")
    first = grid_shown(browser, server, prefix, n="16", seed="0", truncation="1")
    browser.wait("document.getElementById('info').rows.length > 0", "the model's info")
    classes = browser.evaluate("document.getElementById('label').options.length - 1")
    assert classes == (10 if prefix == "c" else 0)
    shown = "(e => e.offsetWidth > 0 && getComputedStyle(e).display !== 'none')(document.getElementById('label-box'))"
    assert browser.evaluate(shown) is (prefix == "c"), "the class selector is shown for conditional models only"

    drag_answered_newest_first(browser, "truncation", ["0.9", "0.75", "0.6", "0.45", "0.3"])
    truncated = grid_shown(browser, server, prefix, truncation="0.3")
    assert browser.evaluate("document.getElementById('truncation-value').textContent") == "0.30"
    assert differ(truncated, first), "the grid did not change with the truncation"
    if prefix == "c":
        set_value(browser, "label", ["3"])
        one_class = grid_shown(browser, server, prefix, truncation="0.3", label="3")
        assert differ(one_class, truncated), "the grid did not change with the class"


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
