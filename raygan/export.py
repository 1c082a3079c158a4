"""The sampling generator as one file that loads without raygan: TorchScript or ONNX.

The generator is the checkpoint's sampler (the EMA copy when the run kept one) with BatchNorm in eval
mode, so the file draws exactly what `raygan sample` draws from the same latents. Its metadata says how
to call it: `latent_dim`, `num_classes` (0: unconditional), `channels`, `image_size`, `output_range`.

    raygan export ~/raygan_results/exp1 --format torchscript --out G.pt

    import json, torch
    extra = {"raygan.json": ""}
    G = torch.jit.load("G.pt", _extra_files=extra)
    meta = json.loads(extra["raygan.json"])
    images = G(torch.randn(16, meta["latent_dim"]))  # 16 x C x H x W in [-1, 1]; conditional: G(z, labels)

ONNX (`--format onnx`): inputs `z` (N x latent_dim, float32) and, for conditional models, `labels` (N,
int64); output `images`; the batch axis is dynamic; the metadata is in the model's `metadata_props`
(onnxruntime: `session.get_modelmeta().custom_metadata_map`), values as JSON text.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raygan import storage
from raygan.checkpoint import load_generator
from raygan.config import Config
from raygan.errors import UserError

METADATA_FILE = "raygan.json"  # TorchScript: the metadata's name among the file's _extra_files
ONNX_OPSET = 17  # runs on every onnxruntime since 1.14
TRACE_BATCH = 2  # the batch axis is traced generic; 2 keeps the trace cheap


def export_metadata(cfg: Config, meta: dict[str, Any]) -> dict[str, Any]:
    """What a user of the file needs to call it, and where it came from."""
    conditional = cfg.model.conditional
    return {
        "latent_dim": cfg.model.latent_dim,
        "num_classes": meta["num_classes"] if conditional else 0,
        "channels": meta["channels"],
        "image_size": cfg.data.image_size,
        "output_range": [-1.0, 1.0],  # every raygan generator ends in tanh
        "output_activation": "tanh",
        "inputs": ["z", "labels"] if conditional else ["z"],
        "output": "images",
        "arch": cfg.model.arch,
        "ema": cfg.train.uses_ema,
        "step": meta.get("step"),
        "fid": meta.get("fid"),
        "checkpoint": meta["checkpoint"],
    }


def example_inputs(metadata: dict[str, Any], batch: int = TRACE_BATCH) -> tuple[torch.Tensor, ...]:
    """Inputs to trace with: the batch size does not matter, the shapes after it do."""
    z = torch.randn(batch, metadata["latent_dim"], generator=torch.Generator().manual_seed(batch))
    if not metadata["num_classes"]:
        return (z,)
    return z, torch.arange(batch) % metadata["num_classes"]


@torch.no_grad()
def to_torchscript(G: nn.Module, metadata: dict[str, Any]) -> bytes:
    # a trace, not a script: the conditional G's Optional labels do not compile, and the trace bakes BN's eval mode in.
    # torch's own trace check re-traces and diffs graphs (2.2 of 2.6 s for the 64x64 DCGAN); the check below is direct
    G = G.eval().requires_grad_(False)  # the file's users get images, not an autograd graph behind them
    traced = torch.jit.trace(G, example_inputs(metadata), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(metadata)})
    inputs = example_inputs(metadata, batch=TRACE_BATCH + 1)  # another batch size: the batch axis stayed generic
    if not torch.allclose(torch.jit.load(io.BytesIO(buffer.getvalue()))(*inputs), G(*inputs), atol=1e-5):
        raise RuntimeError("the traced generator does not draw what the generator draws")
    return buffer.getvalue()


def to_onnx(G: nn.Module, metadata: dict[str, Any]) -> bytes:
    onnx = require_onnx()
    names = metadata["inputs"]
    buffer = io.BytesIO()
    # the TorchScript-based exporter needs only `onnx`; the dynamo one would add onnxscript for a static graph
    torch.onnx.export(
        G.eval(),
        example_inputs(metadata),
        buffer,
        input_names=names,
        output_names=["images"],
        dynamic_axes={name: {0: "batch"} for name in [*names, "images"]},
        opset_version=ONNX_OPSET,
        dynamo=False,
    )
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.checker.check_model(model)
    return model.SerializeToString()


EXPORTERS = {"torchscript": to_torchscript, "onnx": to_onnx}


def require_onnx():
    try:
        import onnx
    except ImportError:
        raise UserError(
            "--format onnx: needs the onnx package (pip install onnx; onnxruntime to run the file)"
        ) from None
    return onnx


def check_out(out: str) -> None:
    """--out can be written: bad input is found before the export runs."""
    if storage.is_uri(out):
        storage.check_writable(storage.parent(out))
        return
    path = Path(out).expanduser()
    if path.is_dir():
        raise UserError(f"{out}: is a folder (--out names the file to write)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create its folder ({e.strerror})") from None
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"{out}: cannot write to {path.parent}")


def export_generator(checkpoint: str, fmt: str, out: str) -> dict[str, Any]:
    """Write the sampling generator of a checkpoint (or a run's best) to `out` as TorchScript or ONNX.

    Returns the file's metadata plus `out`, `format`, `bytes` and `seconds` (the export and the write).

        from raygan.export import export_generator
        export_generator("~/raygan_results/exp1", "onnx", "G.onnx")  # {"latent_dim": 64, "bytes": ..., ...}
    """
    if fmt not in EXPORTERS:
        raise UserError(f"--format: {fmt!r} is not one of {', '.join(EXPORTERS)}")
    if fmt == "onnx":
        require_onnx()
    G, cfg, meta = load_generator(checkpoint)
    check_out(out)
    metadata = export_metadata(cfg, meta)
    started = time.perf_counter()
    data = EXPORTERS[fmt](G, metadata)
    storage.write_bytes(storage.expand(out), data)
    seconds = time.perf_counter() - started
    return {"out": out, "format": fmt, "bytes": len(data), "seconds": seconds, **metadata}
