"""`raygan serve`: the sampling generator on Ray Serve, an HTTP API and a web page to play with it.

    raygan serve ~/raygan_results/emoji                      # a run's best checkpoint; a sweep's best trial's
    curl -s localhost:8000/info
    curl -s 'localhost:8000/sample?n=16&seed=7&truncation=0.7' -o grid.png
    curl -s 'localhost:8000/sample?n=16&seed=7&format=npz' -o samples.npz   # as `raygan sample --seed 7` writes
    curl -s 'localhost:8000/interpolate?seed=7&frames=24' -o walk.gif

A replica loads the checkpoint's sampling generator (G_ema where the run kept one) once and draws with
`raygan sample`'s own code: the same seed, truncation and label give the same images. Concurrent /sample
requests are drawn in one generator forward (`@serve.batch`), each from its own seed. Query values are
parsed here rather than by FastAPI, so that every bad one is HTTP 400 `{"error": "NAME: ..."}`.

A RayService (cluster/kuberay/rayservice.yaml) builds the same application with `import_path:
raygan.serve.app:build` and `args: {checkpoint: s3://...}`.
"""

# no `from __future__ import annotations`: FastAPI reads the route methods' annotations (`request: Request`)
import asyncio
import base64
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve

from raygan import sampling
from raygan.checkpoint import load_generator
from raygan.export import export_metadata
from raygan.images import generate, grid_array, png_bytes

MAX_N = 256  # default cap on images per /sample request (--max-n): 256 of 64x64 is ~1 MB of PNG
DEFAULT_N = 16  # a 4 x 4 grid
MAX_KEYFRAMES = 16
MAX_FRAMES = 120  # frames from one keyframe to the next (6 s at 20 frames per second)
MAX_WALK_IMAGES = 8192  # n x keyframes x frames that one /interpolate may draw: a few seconds on 2 cores
BATCH_REQUESTS = 8  # concurrent /sample requests drawn in one generator forward (--batch; 1: no batching)
BATCH_WAIT_S = 0.005  # how long a request waits for others to join its batch
ONGOING_PER_BATCH = 8  # requests a replica holds, per request of a batch: Serve's default (5 in all) would
# cap a batch below 8 and leave the rest of 32 clients retrying in the proxy (p50 3.4 s for n=1 on 2 cores)
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes up to 64 bits; JSON and JavaScript agree on 63
FORMATS = {"png": "image/png", "npz": "application/octet-stream", "json": "application/json"}
SAMPLE_PARAMS = ("n", "seed", "truncation", "label", "format")
WALK_PARAMS = ("n", "seed", "truncation", "label", "keyframes", "frames")
BUILD_ARGS = ("checkpoint", "replicas", "max_replicas", "max_n", "batch")  # a RayService's `args:`
PAGE = Path(__file__).with_name("page.html")


class BadParameter(ValueError):
    """A query value the model cannot draw with: HTTP 400, its message naming the parameter."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")


@dataclass(frozen=True)
class Model:
    """What a request is checked against."""

    latent_dim: int
    num_classes: int  # 0: unconditional
    max_n: int


@dataclass(frozen=True)
class Draw:
    """One request's images: `raygan sample --num n --seed seed --truncation truncation [--label label]`."""

    n: int
    seed: int
    truncation: float
    label: int | None


def _value(query: Mapping[str, str], name: str, kind: type, default: Any) -> Any:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise BadParameter(name, f"not {'an integer' if kind is int else 'a number'}: {raw!r}") from None


def _in_range(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise BadParameter(name, f"must be in {low}..{high}, got {value}")
    return value


def check_known(query: Mapping[str, str], known: tuple[str, ...]) -> None:
    """A misspelt parameter (`num=` for `n=`) is an error, not silently the default."""
    unknown = sorted(set(query) - set(known))
    if unknown:
        raise BadParameter(unknown[0], f"unknown parameter (this endpoint takes {', '.join(known)})")


def parse_draw(query: Mapping[str, str], model: Model, max_n: int | None = None) -> Draw:
    """The Draw a query asks for; BadParameter naming the first value the model cannot draw with."""
    n = _in_range("n", _value(query, "n", int, DEFAULT_N), 1, max_n or model.max_n)
    seed = _in_range("seed", _value(query, "seed", int, 0), 0, MAX_SEED)
    truncation = _value(query, "truncation", float, 1.0)
    if not 0 < truncation <= 1:  # NaN fails too
        raise BadParameter("truncation", f"must be in (0, 1], got {truncation}")
    label = _value(query, "label", int, None)
    if label is not None and not model.num_classes:
        raise BadParameter("label", "this model is unconditional: it takes no label")
    if label is not None:
        _in_range("label", label, 0, model.num_classes - 1)
    return Draw(n, seed, truncation, label)


def parse_format(query: Mapping[str, str]) -> str:
    fmt = query.get("format") or "png"
    if fmt not in FORMATS:
        raise BadParameter("format", f"{fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


def parse_walk(query: Mapping[str, str], model: Model) -> tuple[Draw, int, int]:
    """(draw, keyframes, frames per segment) of an /interpolate query, its images bounded in total."""
    keyframes = _in_range("keyframes", _value(query, "keyframes", int, 2), 2, MAX_KEYFRAMES)
    frames = _in_range("frames", _value(query, "frames", int, sampling.FRAMES_PER_SEGMENT), 1, MAX_FRAMES)
    draw = parse_draw(query, model, max_n=min(model.max_n, MAX_WALK_IMAGES // (keyframes * frames)) or 1)
    return draw, keyframes, frames


def encode(fmt: str, images: torch.Tensor, labels: torch.Tensor | None, nrow: int | None, draw: Draw) -> Response:
    """The response body for one request's images: a PNG grid, `raygan sample`'s .npz, or JSON."""
    if fmt == "png":
        return Response(png_bytes(grid_array(images, nrow)), media_type=FORMATS[fmt])
    if fmt == "npz":
        buffer = io.BytesIO()
        sampling.save_npz(buffer, images, labels)
        headers = {"Content-Disposition": f'attachment; filename="samples-{draw.seed}.npz"'}
        return Response(buffer.getvalue(), media_type=FORMATS[fmt], headers=headers)
    pixels = sampling.to_uint8(images).transpose(0, 2, 3, 1)  # N x H x W x C, as PIL wants it
    pngs = [base64.b64encode(png_bytes(p[..., 0] if p.shape[-1] == 1 else p)).decode() for p in pixels]
    body = {
        "n": draw.n,
        "seed": draw.seed,
        "truncation": draw.truncation,
        "labels": [-1] * len(pngs) if labels is None else labels.tolist(),
        "images": pngs,  # one base64 PNG per image, at the model's resolution
    }
    return Response(json.dumps(body), media_type=FORMATS[fmt])


def model_info(cfg, meta: dict[str, Any], max_n: int) -> dict[str, Any]:
    """GET /info: export's metadata under the names the API documents, and the request limits."""
    info = export_metadata(cfg, meta)
    fid = info["fid"]
    return {
        "resolution": info["image_size"],
        "channels": info["channels"],
        "classes": info["num_classes"],
        **info,
        "fid": fid if fid is None or math.isfinite(fid) else None,
        "dataset": cfg.data.name,
        "max_n": max_n,
        "max_frames": MAX_FRAMES,
        "max_keyframes": MAX_KEYFRAMES,
    }


api = FastAPI(title="raygan", description="Samples from a raygan generator", docs_url="/docs", redoc_url=None)


@api.exception_handler(BadParameter)
async def _bad_parameter(request: Request, error: BadParameter) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=400)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's own checks (none are declared today) answer in the same shape, 400 rather than 422."""
    first = error.errors()[0] if error.errors() else {}
    name = str(first.get("loc", ["request"])[-1])
    return JSONResponse({"error": f"{name}: {first.get('msg', 'invalid')}"}, status_code=400)


@serve.deployment(
    name="generator",
    logging_config={"enable_access_log": False},
    health_check_period_s=10,
)
@serve.ingress(api)
class GeneratorServer:
    """A replica: the checkpoint's sampling generator in eval mode, loaded once, drawing in torch.no_grad
    (raygan.images.generate)."""

    def __init__(self, checkpoint: str, max_n: int = MAX_N, batch_requests: int = BATCH_REQUESTS):
        self.G, cfg, meta = load_generator(checkpoint)
        self.info = model_info(cfg, meta, max_n)
        self.model = Model(cfg.model.latent_dim, self.info["classes"], max_n)
        self.draw_batch.set_max_batch_size(batch_requests)
        self.page = PAGE.read_text()

    @api.get("/healthz")
    def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/info")
    def get_info(self) -> dict:
        return self.info

    @api.get("/", response_class=HTMLResponse)
    def page(self) -> str:
        return self.page

    @api.get("/sample")
    async def sample(self, request: Request) -> Response:
        query = request.query_params
        check_known(query, SAMPLE_PARAMS)
        draw, fmt = parse_draw(query, self.model), parse_format(query)
        images, labels, nrow = await self.draw_batch(draw)
        return await asyncio.to_thread(encode, fmt, images, labels, nrow, draw)

    @api.get("/interpolate")
    async def interpolate(self, request: Request) -> Response:
        query = request.query_params
        check_known(query, WALK_PARAMS)
        draw, keyframes, frames = parse_walk(query, self.model)
        gif = await asyncio.to_thread(self._walk, draw, keyframes, frames)
        return Response(gif, media_type="image/gif")

    @serve.batch(max_batch_size=BATCH_REQUESTS, batch_wait_timeout_s=BATCH_WAIT_S)
    async def draw_batch(self, draws: list[Draw]) -> list[tuple]:
        """Each request's latents from its own seed, all of them through G in one forward."""
        return await asyncio.to_thread(self._draw, draws)

    def _draw(self, draws: list[Draw]) -> list[tuple]:
        inputs = [
            sampling.still_inputs(d.n, self.model.latent_dim, d.seed, d.truncation, self.model.num_classes, d.label)
            for d in draws
        ]
        conditional = self.model.num_classes > 0
        images = generate(
            self.G, torch.cat([z for z, _, _ in inputs]), torch.cat([y for _, y, _ in inputs]) if conditional else None
        )
        found, start = [], 0
        for z, labels, nrow in inputs:
            found.append((images[start : start + len(z)], labels, nrow))
            start += len(z)
        return found

    def _walk(self, draw: Draw, keyframes: int, frames: int) -> bytes:
        """`raygan sample --num n --seed seed --interpolate keyframes --frames frames` as GIF bytes."""
        latents = sampling.draw_latents(draw.n, self.model.latent_dim, draw.seed, draw.truncation, keyframes)
        buffer = io.BytesIO()
        sampling.write_walk(self.G, latents, buffer, self.model.num_classes, draw.label, frames_per_segment=frames)
        return buffer.getvalue()


def application(
    checkpoint: str,
    replicas: int | None = 1,
    max_n: int = MAX_N,
    batch_requests: int = BATCH_REQUESTS,
    max_replicas: int | None = None,
):
    """The Serve application for a resolved checkpoint: `replicas` copies of the generator, or with
    `max_replicas` as many as the load asks for between the two; None leaves it to Serve's config
    (a RayService's `deployments:` entry)."""
    options: dict[str, Any] = {"max_ongoing_requests": ONGOING_PER_BATCH * max(batch_requests, BATCH_REQUESTS)}
    if max_replicas is not None:
        options["autoscaling_config"] = {
            "min_replicas": replicas or 1,
            "max_replicas": max_replicas,
            "target_ongoing_requests": batch_requests,
        }
    elif replicas is not None:
        options["num_replicas"] = replicas
    return GeneratorServer.options(**options).bind(checkpoint, max_n, batch_requests)


def build(args: dict[str, Any]):
    """Serve's application builder (`import_path: raygan.serve.app:build`, as a RayService names it):
    args `checkpoint` (a checkpoint, run or sweep, local or s3://), optional `replicas`, `max_replicas`,
    `max_n`, `batch`; the checkpoint is resolved once, here, so that every replica serves the same one."""
    unknown = set(args) - set(BUILD_ARGS)
    if unknown or "checkpoint" not in args:
        raise ValueError(f"raygan.serve.app:build takes args {', '.join(BUILD_ARGS)} (checkpoint required)")
    checkpoint = load_generator(args["checkpoint"])[2]["checkpoint"]
    optional = {key: int(args[key]) if args.get(key) is not None else None for key in BUILD_ARGS[1:]}
    return application(
        checkpoint,
        optional["replicas"],
        optional["max_n"] or MAX_N,
        optional["batch"] or BATCH_REQUESTS,
        optional["max_replicas"],
    )
