"""One frozen config tree for a raygan run: YAML in, `--set` overrides, one `validate()`.

    cfg = load_config("tune_configs/smoke.yaml", overrides=["train.steps=100", "optim.d.name=sgd"])

Every key can be overridden with `--set dotted.key=value` (the value is parsed as YAML: numbers,
booleans, null, lists) and searched by a sweep. Unknown keys, wrong types, out-of-range values and
contradictions raise `ConfigError("<key>", "<what is wrong>")`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from raygan.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"  # digits | stacked-digits | emoji | random | folder | npz
    path: str | None = None  # folder of images or .npz file (local or s3://); folder/npz only
    image_size: int = 32  # power of two, 8..256 (emoji: 16, 32 or 64); images are resized to it
    channels: int = 3  # 1 | 3: random noise and folder images (converted to L or RGB)
    background: str = "white"  # white | black | gray | #rrggbb: under transparent pixels (emoji, RGBA files)
    xflip: bool = (
        False  # mirror each real image with probability 1/2 (a dataset twice the size, as StyleGAN's --mirror)
    )
    cache: str = "auto"  # folder: memory (decoded once, exact resume) | stream (Ray Data) | auto (memory if it fits)


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "dcgan"  # dcgan | resnet (residual G and D); registry: raygan.models.ARCHS
    latent_dim: int = 100  # size of z
    g_layers: int = 4  # G's stages: starts at image_size / 2**(g_layers-1) px, doubles g_layers-1 times
    d_layers: int = 4  # conv layers in D: halves d_layers-1 times, a last conv covers the rest
    g_width: int = 64  # channels of G's last hidden layer; doubles towards the input
    d_width: int = 64  # channels of D's first layer; doubles with depth
    g_activation: str = "relu"  # relu | leaky_relu
    d_activation: str = "leaky_relu"  # relu | leaky_relu
    g_norm: str = "batch"  # batch | none
    d_norm: str = "batch"  # batch | none | layer | spectral
    d_dropout: float = 0.0  # dropout after each hidden D activation (MRI project: 0.25..0.45)
    bn_momentum: float = 0.1  # PyTorch convention: Keras momentum 0.8 is 0.2 here
    conditional: bool = False  # CGAN: the label conditions G (embedding) and D (projection)
    pack: int = 1  # PacGAN: D judges this many samples at once, stacked along channels (against mode collapse)


@dataclass(frozen=True)
class LossConfig:
    name: str = "gan"  # gan | wgan | wgan-gp | hinge | rpgan (relativistic pairing, R3GAN) | combined
    label_smoothing: float = 0.0  # one-sided: real target is 1 - label_smoothing
    label_smoothing_mode: str = "fixed"  # fixed | uniform (real targets drawn from U(1 - s, 1))
    label_flip: float = 0.0  # fraction of D's real/fake targets swapped each step
    gp_weight: float = 10.0  # wgan-gp gradient penalty weight
    clip: float = 0.01  # wgan / combined critic weight clipping
    combined_weight: float = 0.5  # combined: the critic's share of G's loss
    r1_gamma: float = 0.0  # R1: (gamma / 2) E||grad D(real)||^2 in D's loss (0: off); R3GAN uses one gamma for both
    r2_gamma: float = 0.0  # R2: the same on G's samples
    reg_interval: int = 1  # lazy regularisation: R1/R2 every this many steps, scaled by it (StyleGAN2: 16)


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"  # adam | sgd | rmsprop
    lr: float = 2.0e-4
    betas: tuple[float, float] = (0.5, 0.999)  # adam
    momentum: float = 0.0  # sgd, rmsprop
    nesterov: bool = False  # sgd only (needs momentum > 0)
    alpha: float = 0.99  # rmsprop smoothing
    weight_decay: float = 0.0


@dataclass(frozen=True)
class OptimConfig:
    g: OptimizerConfig = field(default_factory=OptimizerConfig)
    d: OptimizerConfig = field(default_factory=OptimizerConfig)
    critic: OptimizerConfig | None = None  # combined loss's critic; null: same as d


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 64  # global, split evenly over scaling.num_workers
    steps: int = 2000  # generator updates
    n_critic: int = 1  # D (critic) updates per G update, each on a fresh real batch
    d_loss_threshold: float | None = None  # D updated only while its batch loss is above this
    g_loss_threshold: float | None = None  # G updated only while its batch loss is above this
    ema: float = 0.0  # decay of an exponential moving average of G (0: off); ramps up from 0.1 over the first steps
    eval_every: int = 250  # steps between evaluations
    checkpoint_every: int = 250  # steps between checkpoints (rank 0 writes)
    keep_checkpoints: int = 3  # checkpoints kept in storage (the latest always)
    report_every: int = 50  # steps between metric reports (Ray's report blocks ~2 s)
    patience: int | None = None  # stop after this many evaluations without a new best FID
    stop_on: tuple[str, ...] = ()  # stop the run on: nan | collapse | diminished_gradient | non_convergence
    augment: tuple[str, ...] = ()  # DiffAugment of all D's inputs, real and fake: translation | cutout | color
    augment_p: float = 1.0  # probability each augment transform applies to an image (with ada_target: where p starts)
    ada_target: float | None = (
        None  # adapt augment_p so E[sign D(real)] stays at this (StyleGAN2-ADA: 0.6); null: fixed
    )
    ada_interval: int = 4  # steps between adjustments of p
    ada_kimg: float = 100.0  # thousands of images for p to go from 0 to 1 at the fastest (StyleGAN2-ADA: 500)
    max_failures: int = 0  # worker failures survived by restarting from the last checkpoint
    time_budget_s: float | None = (
        None  # stop after this many seconds of training, evaluated and checkpointed; null: no limit
    )
    amp: str | None = None  # bf16 | fp16 on CUDA; null: full precision
    channels_last: bool = True  # NHWC activations: faster convs on CPU (oneDNN, +10-25% here) and CUDA
    compile: bool = False  # torch.compile G and D (pays on long GPU runs; the first steps compile)
    cudnn_benchmark: bool = True  # CUDA: let cuDNN time its convolution algorithms once per shape


@dataclass(frozen=True)
class EvalConfig:
    features: str = "digits"  # digits | emoji | inception | path to a TorchScript feature module
    num_samples: int = 2000  # generated images per evaluation, from fixed latents
    inception_weights: str | None = None  # local InceptionV3 FID weights for offline clusters


@dataclass(frozen=True)
class HealthConfig:
    """Rules of the GAN health monitor, checked at every evaluation (see raygan/metrics/health.py)."""

    # mode collapse: samples cover under this fraction of the classes that as many real draws cover ...
    collapse_coverage: float = 0.8
    collapse_kl: float = 0.5  # ... or sit this much further (KL, nats) from the real class mix than real draws ...
    collapse_diversity: float = 0.5  # ... or feature diversity is under this fraction of the real data's
    d_win_loss: float = 0.05  # diminished gradient: D's loss under this ...
    d_win_accuracy: float = 0.99  # ... and its accuracy over this ...
    window: int = 3  # ... for this many evaluations in a row; also the non-convergence window
    fid_rise: float = 1.5  # non-convergence: FID this many times its best, `window` evaluations after it ...
    oscillation: float = (
        0.5  # ... or G's loss varies this much (std / mean) over `window` evaluations without a new best
    )


@dataclass(frozen=True)
class ScalingConfig:
    num_workers: int = 1  # Ray Train workers, one DDP rank each
    use_gpu: bool = False
    cpus_per_worker: float = 1  # also the torch threads per worker
    gpus_per_worker: float = 1  # fractional GPUs let trials share a device
    sync_batchnorm: bool = False  # GPU only: batch statistics over the global batch
    resources_per_worker: dict = field(default_factory=dict)  # extra Ray resources per worker, e.g. {trainer: 1}


@dataclass(frozen=True)
class StorageConfig:
    path: str = "~/raygan_results"  # local folder or s3://bucket/prefix


@dataclass(frozen=True)
class MLflowConfig:
    tracking_uri: str | None = None  # http(s)://host:port of a tracking server; null: $MLFLOW_TRACKING_URI or ./mlruns
    experiment: str = "raygan"  # MLflow experiment the runs (a sweep's trials) go to; created if missing


@dataclass(frozen=True)
class WandbConfig:
    project: str = "raygan"
    mode: str = "online"  # online | offline (files under $WANDB_DIR, `wandb sync` later) | disabled


@dataclass(frozen=True)
class LoggingConfig:
    """Experiment trackers; credentials come from the environment (MLFLOW_TRACKING_TOKEN, WANDB_API_KEY ...)."""

    mlflow: MLflowConfig | None = None  # null: off
    wandb: WandbConfig | None = None  # null: off


@dataclass(frozen=True)
class TuneConfig:
    num_samples: int = 8  # trials drawn from search_space (per grid point)
    max_concurrent: int = 2  # trials running at once
    scheduler: dict = field(default_factory=lambda: {"name": "asha"})  # asha | pbt | fifo
    search_alg: dict = field(default_factory=lambda: {"name": "random"})  # random | optuna (TPE) | bohb
    search_space: dict = field(default_factory=dict)  # "dotted.key": {choice: [...]} ...
    time_budget_s: float | None = None  # the whole sweep: no new trials and running ones stopped after this
    max_failures: int = 0  # retries of a failed trial, each from its last checkpoint (-1: without end)


@dataclass(frozen=True)
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)

    def to_dict(self) -> dict:
        return to_dict(self)


CHOICES = {
    "data.name": ("digits", "stacked-digits", "emoji", "random", "folder", "npz"),
    "model.g_activation": ("relu", "leaky_relu"),
    "model.d_activation": ("relu", "leaky_relu"),
    "model.g_norm": ("batch", "none"),
    "model.d_norm": ("batch", "none", "layer", "spectral"),
    "loss.name": ("gan", "wgan", "wgan-gp", "hinge", "rpgan", "combined"),
    "loss.label_smoothing_mode": ("fixed", "uniform"),
    "data.cache": ("auto", "memory", "stream"),
    "train.amp": (None, "bf16", "fp16"),
    "train.stop_on": ("nan", "collapse", "diminished_gradient", "non_convergence"),
    "train.augment": ("translation", "cutout", "color"),
    "logging.wandb.mode": ("online", "offline", "disabled"),
    "tune.scheduler.name": ("asha", "pbt", "fifo"),
    "tune.search_alg.name": ("random", "optuna", "bohb"),
}
OPTIMIZERS = ("adam", "sgd", "rmsprop")
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128)}  # or "#rrggbb"


def background_rgb(background: str) -> tuple[int, int, int]:
    """`data.background` -> an RGB triple in 0..255: a name in BACKGROUNDS or `#rrggbb` (ValueError otherwise)."""
    if background in BACKGROUNDS:
        return BACKGROUNDS[background]
    try:
        if len(background) == 7 and background.startswith("#"):
            return tuple(int(background[i : i + 2], 16) for i in (1, 3, 5))
    except ValueError:
        pass
    raise ValueError(f"{background!r} is not one of: {', '.join(BACKGROUNDS)}, or #rrggbb")


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass


def to_dict(obj: Any) -> Any:
    """Plain YAML/JSON-friendly data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where it is lossless."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        non_null = [t for t in options if t is not type(None)]
        return _coerce(value, non_null[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(key, f"expected a list of {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, args)))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict:
        if isinstance(value, dict):
            return value
    raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from nested dicts; unknown keys and wrong types raise ConfigError."""
    if data is None:
        data = {}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(prefix + str(key), f"unknown key (expected one of: {', '.join(sorted(names))})")
    values = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    return cls(**values)


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), "is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`train.steps=100` -> ("train.steps", 100); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError("--set", f"expected KEY=VALUE, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(key, f"cannot parse value {raw!r}: {e.problem}") from None
    return key, value


def merge(base: dict, updates: dict) -> dict:
    """Dotted keys in `updates` applied onto a copy of the nested dict `base`."""
    tree = _deep_copy(base)
    for key, value in updates.items():
        _set_dotted(tree, key, value)
    return tree


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(str(path), f"not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "expected a mapping of config sections at the top level")
    return data


def build_config(tree: dict, overrides: list[str] | dict | None = None) -> Config:
    """Nested dict + overrides -> validated Config."""
    if isinstance(overrides, dict):
        updates = overrides
    else:
        updates = dict(parse_override(o) for o in overrides or [])
    cfg = from_dict(Config, merge(tree, updates))
    validate(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | dict | None = None) -> Config:
    """Read YAML (or defaults when `path` is None), apply `--set` overrides, validate."""
    return build_config(read_yaml(path) if path else {}, overrides)


def replace(cfg: Config, updates: dict) -> Config:
    """A new validated Config with dotted-key `updates` applied (used by sweeps)."""
    return build_config(cfg.to_dict(), updates)


def get_dotted(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            raise ConfigError(key, "not a config key")
        node = getattr(node, part)
    return node


# ---------------------------------------------------------------------------------------------
# validation


def _check_choice(key: str, value: Any) -> None:
    allowed = CHOICES[key]
    if value not in allowed:
        shown = ", ".join("null" if a is None else str(a) for a in allowed)
        raise ConfigError(key, f"{value!r} is not one of: {shown}")


def _check_range(key: str, value: float | None, lo=None, hi=None, lo_open=False, hi_open=False) -> None:
    if value is None:
        return
    if not math.isfinite(value):
        raise ConfigError(key, f"must be finite, got {value}")
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ConfigError(key, f"{value} is outside {left}{lo_s}, {hi_s}{right}")


def max_layers(image_size: int) -> int:
    """Most conv layers G or D can have at `image_size`: the first/last layer works on 2x2 or more."""
    return int(math.log2(image_size))


def validate(cfg: Config) -> None:
    """Raise ConfigError naming the first bad key; contradictions between keys included."""
    d, m, loss, t, s = cfg.data, cfg.model, cfg.loss, cfg.train, cfg.scaling
    _check_range("seed", cfg.seed, 0)

    _check_choice("data.name", d.name)
    size = d.image_size
    if size < 8 or size > 256 or size & (size - 1):
        raise ConfigError("data.image_size", f"must be a power of two from 8 to 256, got {size}")
    _check_choice("data.cache", d.cache)
    if d.name == "emoji" and size not in (16, 32, 64):
        raise ConfigError("data.image_size", f"emoji images are 64x64: use 16, 32 or 64, not {size}")
    if d.channels not in (1, 3):
        raise ConfigError("data.channels", f"must be 1 or 3, got {d.channels}")
    try:
        background_rgb(d.background)
    except ValueError as e:
        raise ConfigError("data.background", str(e)) from None
    if d.name in ("folder", "npz") and not d.path:
        raise ConfigError("data.path", f"data.name {d.name} needs a path")
    if d.name not in ("folder", "npz") and d.path:
        raise ConfigError("data.path", f"only used with data.name folder or npz, not {d.name}")

    from raygan.models import ARCHS  # the registry imports this module

    if m.arch not in ARCHS:
        raise ConfigError("model.arch", f"{m.arch!r} is not one of: {', '.join(ARCHS)}")
    _check_range("model.latent_dim", m.latent_dim, 1)
    top = max_layers(size)
    for key, layers in (("model.g_layers", m.g_layers), ("model.d_layers", m.d_layers)):
        if not 2 <= layers <= top:
            raise ConfigError(key, f"{layers} layers cannot make {size}x{size} images (2..{top} layers fit this size)")
    _check_range("model.g_width", m.g_width, 1)
    _check_range("model.d_width", m.d_width, 1)
    for key in ("model.g_activation", "model.d_activation", "model.g_norm", "model.d_norm"):
        _check_choice(key, get_dotted(cfg, key))
    _check_range("model.d_dropout", m.d_dropout, 0, 1, hi_open=True)
    _check_range("model.bn_momentum", m.bn_momentum, 0, 1)
    _check_range("model.pack", m.pack, 1)
    if m.pack > 1 and m.conditional:
        raise ConfigError("model.pack", "packing mixes the labels of a pack; use it with conditional: false")
    if m.pack > 1 and loss.name == "wgan-gp":
        raise ConfigError("model.pack", "wgan-gp's gradient penalty is per sample; packing needs another loss")

    _check_choice("loss.name", loss.name)
    _check_choice("loss.label_smoothing_mode", loss.label_smoothing_mode)
    _check_range("loss.label_smoothing", loss.label_smoothing, 0, 0.5, hi_open=True)
    _check_range("loss.label_flip", loss.label_flip, 0, 0.5, hi_open=True)
    _check_range("loss.gp_weight", loss.gp_weight, 0)
    _check_range("loss.clip", loss.clip, 0, lo_open=True)
    _check_range("loss.combined_weight", loss.combined_weight, 0, 1)
    if loss.name in ("wgan", "wgan-gp", "hinge") and (loss.label_smoothing or loss.label_flip):
        key = "loss.label_smoothing" if loss.label_smoothing else "loss.label_flip"
        raise ConfigError(key, f"needs a loss with real/fake targets (gan or combined), not {loss.name}")
    _check_range("loss.r1_gamma", loss.r1_gamma, 0)
    _check_range("loss.r2_gamma", loss.r2_gamma, 0)
    _check_range("loss.reg_interval", loss.reg_interval, 1)
    penalties = [
        name for name, on in (("wgan-gp", loss.name == "wgan-gp"), ("R1", loss.r1_gamma), ("R2", loss.r2_gamma)) if on
    ]
    if penalties and m.d_norm == "batch":
        raise ConfigError(
            "model.d_norm",
            f"batch norm mixes samples, so the per-sample gradient penalty ({', '.join(penalties)}) "
            "is wrong; use layer, none or spectral",
        )

    for key, opt in (("optim.g", cfg.optim.g), ("optim.d", cfg.optim.d), ("optim.critic", cfg.optim.critic)):
        if opt is None:
            continue
        if opt.name not in OPTIMIZERS:
            raise ConfigError(f"{key}.name", f"{opt.name!r} is not one of: {', '.join(OPTIMIZERS)}")
        _check_range(f"{key}.lr", opt.lr, 0, lo_open=True)
        for i, beta in enumerate(opt.betas):
            _check_range(f"{key}.betas[{i}]", beta, 0, 1, hi_open=True)
        _check_range(f"{key}.momentum", opt.momentum, 0, 1, hi_open=True)
        _check_range(f"{key}.alpha", opt.alpha, 0, 1, hi_open=True)
        _check_range(f"{key}.weight_decay", opt.weight_decay, 0)
        if opt.name == "sgd" and opt.nesterov and opt.momentum <= 0:  # ignored by adam / rmsprop, so sweeps can mix
            raise ConfigError(f"{key}.nesterov", "needs momentum > 0")
    if cfg.optim.critic is not None and loss.name != "combined":
        raise ConfigError("optim.critic", f"only used with loss.name combined, not {loss.name}")

    _check_range("train.batch_size", t.batch_size, 1)
    _check_range("train.steps", t.steps, 1)
    _check_range("train.n_critic", t.n_critic, 1)
    _check_range("train.ema", t.ema, 0, 1, hi_open=True)
    for key in ("train.eval_every", "train.checkpoint_every", "train.keep_checkpoints", "train.report_every"):
        _check_range(key, get_dotted(cfg, key), 1)
    _check_range("train.patience", t.patience, 1)
    _check_range("train.max_failures", t.max_failures, -1)
    _check_range("train.time_budget_s", t.time_budget_s, 0, lo_open=True)
    _check_choice("train.amp", t.amp)
    for key in ("train.stop_on", "train.augment"):
        for name in get_dotted(cfg, key):
            if name not in CHOICES[key]:
                raise ConfigError(key, f"{name!r} is not one of: {', '.join(CHOICES[key])}")
    _check_range("train.augment_p", t.augment_p, 0, 1)
    _check_range("train.ada_target", t.ada_target, 0, 1, lo_open=True, hi_open=True)
    _check_range("train.ada_interval", t.ada_interval, 1)
    _check_range("train.ada_kimg", t.ada_kimg, 0, lo_open=True)
    if t.ada_target is not None and not t.augment:
        raise ConfigError("train.ada_target", "adapts the probability of train.augment's transforms; list some there")
    if t.amp and not s.use_gpu:
        raise ConfigError("train.amp", f"{t.amp} needs scaling.use_gpu: true (CPU runs in float32)")

    _check_range("eval.num_samples", cfg.eval.num_samples, 2)
    h = cfg.health
    for key in ("collapse_coverage", "d_win_accuracy"):
        _check_range(f"health.{key}", getattr(h, key), 0, 1)
    for key in ("collapse_kl", "collapse_diversity", "d_win_loss", "oscillation"):
        _check_range(f"health.{key}", getattr(h, key), 0)
    _check_range("health.window", h.window, 1)
    _check_range("health.fid_rise", h.fid_rise, 1)

    _check_range("scaling.num_workers", s.num_workers, 1)
    _check_range("scaling.cpus_per_worker", s.cpus_per_worker, 0, lo_open=True)
    _check_range("scaling.gpus_per_worker", s.gpus_per_worker, 0, lo_open=True)
    if t.batch_size % s.num_workers:  # first: a worker's batch is only defined once the split is even
        raise ConfigError("train.batch_size", f"{t.batch_size} does not split evenly over {s.num_workers} workers")
    if (t.batch_size // s.num_workers) % m.pack:
        raise ConfigError(
            "model.pack", f"each worker's batch ({t.batch_size // s.num_workers}) must be a multiple of it"
        )
    if s.sync_batchnorm and not s.use_gpu:
        raise ConfigError("scaling.sync_batchnorm", "PyTorch's SyncBatchNorm runs on GPUs only")
    for name, amount in s.resources_per_worker.items():
        key = f"scaling.resources_per_worker.{name}"
        if name in ("CPU", "GPU"):
            raise ConfigError(key, "set by scaling.cpus_per_worker / gpus_per_worker")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise ConfigError(key, f"expected a number, got {amount!r}")
        _check_range(key, amount, 0, lo_open=True)

    if not cfg.storage.path:
        raise ConfigError("storage.path", "must not be empty")
    _validate_logging(cfg.logging)

    _check_range("tune.num_samples", cfg.tune.num_samples, 1)
    _check_range("tune.max_concurrent", cfg.tune.max_concurrent, 1)
    if "name" not in cfg.tune.scheduler:
        raise ConfigError("tune.scheduler.name", "missing")
    _check_choice("tune.scheduler.name", cfg.tune.scheduler["name"])
    _check_range("tune.time_budget_s", cfg.tune.time_budget_s, 0, lo_open=True)
    _check_range("tune.max_failures", cfg.tune.max_failures, -1)
    _validate_search_alg(cfg.tune)


def _validate_logging(logging: LoggingConfig) -> None:
    """Tracker settings; a URI with a password in it would be stored in every checkpoint's config.json."""
    if logging.mlflow is not None:
        uri = logging.mlflow.tracking_uri
        if uri is not None and not uri.strip():
            raise ConfigError("logging.mlflow.tracking_uri", "must not be empty (null: MLflow's default)")
        if uri is not None and "@" in uri.partition("://")[2].split("/", 1)[0]:
            raise ConfigError(
                "logging.mlflow.tracking_uri",
                "holds credentials (user:password@): set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD "
                "or MLFLOW_TRACKING_TOKEN in the environment instead",
            )
        if not logging.mlflow.experiment.strip():
            raise ConfigError("logging.mlflow.experiment", "must not be empty")
    if logging.wandb is not None:
        if not logging.wandb.project.strip():
            raise ConfigError("logging.wandb.project", "must not be empty")
        _check_choice("logging.wandb.mode", logging.wandb.mode)


def _validate_search_alg(tune: TuneConfig) -> None:
    """The searcher's name, and what it cannot work with: grid values (random only) and PBT."""
    if "name" not in tune.search_alg:
        raise ConfigError("tune.search_alg.name", "missing")
    name = tune.search_alg["name"]
    _check_choice("tune.search_alg.name", name)
    for option in tune.search_alg:
        if option != "name":
            raise ConfigError(f"tune.search_alg.{option}", "unknown option (search_alg takes only a name)")
    if name == "random":
        return
    for key, spec in tune.search_space.items():
        if isinstance(spec, dict) and "grid" in spec:
            raise ConfigError(
                f"tune.search_space.{key}", f"grid values need search_alg random, not {name} (use choice)"
            )
    if tune.scheduler.get("name") == "pbt":
        raise ConfigError(
            "tune.search_alg.name", f"pbt draws and mutates its own configs: use search_alg random, not {name}"
        )
