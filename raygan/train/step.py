"""The GAN training step: one readable file, no Ray import.

    cfg = load_config("tune_configs/smoke.yaml")
    dataset = load_dataset(cfg.data)
    engine = GANEngine(cfg, dataset.channels, dataset.num_classes)
    batches = indexed_batches(dataset, cfg.train.batch_size, cfg.seed)  # k -> global real batch k
    engine.train_step([batches(engine.step * cfg.train.n_critic + i) for i in range(cfg.train.n_critic)])
    metrics = engine.pop_metrics()  # d_loss, g_loss, ...: means over the steps since the last call

Every variant runs through the same step; they differ only in their loss (see `raygan.losses`), its
regularisers (R1/R2 every `reg_interval` steps, lazily), the number of D updates per G update
(`n_critic`) and the update thresholds. With `train.ada_target` the augmentation probability follows
D's overfitting signal E[sign D(real)] as in StyleGAN2-ADA, and is part of the state. `wrap` turns each network
into its data-parallel form (Ray Train passes `prepare_model`); all randomness of step k is drawn
from generators seeded by (seed, k) for the global batch, each rank taking its slice, so w workers
with batch B/w compute what one worker with batch B computes, and a resumed run repeats exactly.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from raygan import losses
from raygan.augment import augment
from raygan.collectives import all_reduce_mean, all_reduce_sum
from raygan.config import Config, OptimizerConfig
from raygan.images import generate
from raygan.models import build_discriminator, build_generator

Batch = tuple[torch.Tensor, torch.Tensor]  # images in [-1, 1], labels
# kinds of random draw in a step, each from its own seeded generator
DRAW_NOISE, DRAW_TARGETS, DRAW_PENALTY, DRAW_AUGMENT_REAL, DRAW_AUGMENT_FAKE, DRAW_AUGMENT_G, DRAW_XFLIP = range(7)
NUM_DRAW_KINDS = DRAW_XFLIP + 1
STANDING_BATCHES = 16  # batches of latents that give the EMA generator its BatchNorm statistics


def make_optimizer(cfg: OptimizerConfig, params) -> torch.optim.Optimizer:
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=cfg.lr, alpha=cfg.alpha, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"unknown optimizer {cfg.name}")


def scheduled_lr(cfg: OptimizerConfig, progress: float) -> float:
    """The learning rate at `progress` (0 to 1) through the run: `lr`, or with `lr_end` a cosine from `lr`
    at 0 to `lr_end` at 1."""
    if cfg.lr_end is None:
        return cfg.lr
    return cfg.lr_end + (cfg.lr - cfg.lr_end) * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0))) / 2


def apply_hyperparameters(optimizer: torch.optim.Optimizer, cfg: OptimizerConfig, progress: float = 0.0) -> None:
    """Set the config's values on a (restored) optimizer, so a checkpoint cannot undo a PBT mutation; the
    learning rate where its schedule is at `progress`."""
    fields = {"lr": scheduled_lr(cfg, progress), "weight_decay": cfg.weight_decay}
    if cfg.name == "adam":
        fields["betas"] = tuple(cfg.betas)
    elif cfg.name == "sgd":
        fields.update(momentum=cfg.momentum, nesterov=cfg.nesterov)
    else:
        fields.update(alpha=cfg.alpha, momentum=cfg.momentum)
    for group in optimizer.param_groups:
        group.update(fields)


def autocast_dtype(amp: str | None, device: torch.device) -> torch.dtype | None:
    """What `train.amp` autocasts to here: on a CPU only bf16, and only where the CPU computes it natively
    (avx512_bf16 or AMX: a 32x32 emoji step 1.6x float32's speed); elsewhere bf16 is emulated, slower than
    float32, so the CPU stays in float32."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if device.type == "cuda":
        return dtype
    if dtype == torch.bfloat16 and cpu_has_native_bf16():
        return dtype
    return None


def cpu_has_native_bf16() -> bool:
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain network inside torch.compile's and DDP's wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def no_sync(model: nn.Module):
    """DDP's no_sync where the model is DDP-wrapped: the G step must not all-reduce D's gradients."""
    return model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext()


class Adversary:
    """A network G is trained against (D or critic), its optimizer and its loss."""

    def __init__(self, spec: losses.AdversarySpec, net: nn.Module, optimizer: torch.optim.Optimizer, opt_cfg):
        self.spec, self.net, self.optimizer, self.opt_cfg = spec, net, optimizer, opt_cfg


class GANEngine:
    def __init__(
        self,
        cfg: Config,
        channels: int,
        num_classes: int,
        device: torch.device | str = "cpu",
        wrap: Callable[[nn.Module], nn.Module] = lambda module: module,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.cfg = cfg
        self.device = torch.device(device)
        self.channels, self.num_classes = channels, num_classes
        self.conditional = cfg.model.conditional
        self.rank, self.world_size = rank, world_size
        self.local_batch = cfg.train.batch_size // world_size
        self.local = slice(rank * self.local_batch, (rank + 1) * self.local_batch)
        cuda = self.device.type == "cuda"
        torch.backends.cudnn.benchmark = cuda and cfg.train.cudnn_benchmark
        self.channels_last = cfg.train.channels_last
        self.amp_dtype = autocast_dtype(cfg.train.amp, self.device)

        seeded = torch.random.fork_rng(devices=[])  # identical initial weights on every rank
        with seeded:
            torch.manual_seed(cfg.seed)
            G = build_generator(cfg, channels, num_classes)
            nets = {spec.name: build_discriminator(cfg, channels, num_classes) for spec in losses.adversaries(cfg.loss)}
        self.G = self._compiled(wrap(self._prepare(G)))
        self.G_ema = copy.deepcopy(unwrap(self.G)).eval().requires_grad_(False) if cfg.train.uses_ema else None
        self.opt_G = make_optimizer(cfg.optim.g, self.G.parameters())
        self.adversaries = []
        for spec in losses.adversaries(cfg.loss):
            opt_cfg = (cfg.optim.critic or cfg.optim.d) if spec.name == "critic" else cfg.optim.d
            net = self._compiled(wrap(self._prepare(nets[spec.name])))
            self.adversaries.append(Adversary(spec, net, make_optimizer(opt_cfg, net.parameters()), opt_cfg))
        scaler_on = self.amp_dtype == torch.float16
        self.scaler_G = torch.amp.GradScaler("cuda", enabled=scaler_on)
        self.scaler_D = torch.amp.GradScaler("cuda", enabled=scaler_on)
        self.step = 0
        self.d_skipped = 0
        self.g_skipped = 0
        self.trained_s = 0.0  # seconds of training so far, over resumes: what train.time_budget_s limits
        self.progress = 0.0  # how far through its run (0 to 1) the learning-rate schedules are
        self.augment_p = cfg.train.augment_p  # adapted when train.ada_target is set
        self._real_sign = torch.zeros(
            2, device=self.device
        )  # ADA: sum of sign D(real), count, since the last adjustment
        self._lecam_ema = torch.zeros(2, device=self.device)  # LeCam: moving averages of D(real), D(fake)
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}  # per metric: g_grad_norm only counts the G updates that ran

    def _prepare(self, net: nn.Module) -> nn.Module:
        net = net.to(self.device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        if self.cfg.scaling.sync_batchnorm:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        return net

    def _compiled(self, net: nn.Module) -> nn.Module:
        return torch.compile(net) if self.cfg.train.compile else net  # around DDP: its buckets guide the graph breaks

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # -- randomness -----------------------------------------------------------------------------

    def _generator(self, kind: int, index: int = 0) -> torch.Generator:
        """Seeded by (run seed, step, kind of draw, its index in the step): the same on every rank, and
        again after a resume."""
        seed = (((self.cfg.seed * 1_000_003 + self.step) * NUM_DRAW_KINDS + kind) * 1_000_003 + index) % 2**63
        return torch.Generator().manual_seed(seed)

    def _augment(self, images: torch.Tensor, kind: int, index: int) -> torch.Tensor:
        names = self.cfg.train.augment
        if not names or self.augment_p == 0:
            return images
        g = self._generator(kind, index)
        out = augment(images, names, g, self.cfg.train.batch_size, self.local, p=self.augment_p)
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def _xflip(self, images: torch.Tensor, index: int) -> torch.Tensor:
        """Each real image mirrored with probability 1/2 (data.xflip)."""
        if not self.cfg.data.xflip:
            return images
        flip = torch.rand(self.cfg.train.batch_size, generator=self._generator(DRAW_XFLIP, index))[self.local] < 0.5
        return torch.where(flip.to(images.device)[:, None, None, None], images.flip(3), images)

    def _noise(self, purpose: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's slice of the global batch of latents (and labels for conditional models)."""
        g = self._generator(DRAW_NOISE, purpose)
        z = torch.randn(self.cfg.train.batch_size, self.cfg.model.latent_dim, generator=g)[self.local]
        labels = None
        if self.conditional:
            labels = torch.randint(self.num_classes, (self.cfg.train.batch_size,), generator=g)[self.local]
            labels = labels.to(self.device, non_blocking=True)
        return z.to(self.device, non_blocking=True), labels

    # -- the step -------------------------------------------------------------------------------

    def train_step(self, real_batches: list[Batch]) -> None:
        """One G update after `n_critic` updates of each adversary, one real batch each."""
        cfg = self.cfg
        torch.manual_seed((cfg.seed * 7919 + self.step * 104_729 + self.rank) % 2**63)  # dropout masks
        fake = fake_labels = None
        for i, (images, labels) in enumerate(real_batches):
            last = i == len(real_batches) - 1
            images = self._xflip(images.to(self.device, non_blocking=True), i)
            labels = labels.to(self.device, non_blocking=True) if self.conditional else None
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            z, fake_labels = self._noise(purpose=i)
            with torch.set_grad_enabled(last), self._autocast():
                fake = self.G(z, fake_labels)  # the last one is reused by the G update, as in DCGAN
            for adversary in self.adversaries:
                self._adversary_update(adversary, images, labels, fake.detach(), fake_labels, purpose=i)
        self._generator_update(fake, fake_labels, images, labels)
        self.step += 1
        if cfg.train.ada_target is not None and self.step % cfg.train.ada_interval == 0:
            self._adapt_augmentation()

    def _adapt_augmentation(self) -> None:
        """StyleGAN2-ADA: raise p while D is sure of the real images (E[sign D(real)] above the target),
        lower it otherwise, by at most the step that takes p from 0 to 1 in `ada_kimg` thousand images."""
        t = self.cfg.train
        sign_sum, count = all_reduce_sum(self._real_sign).tolist()
        self._real_sign.zero_()
        if count == 0:
            return
        rate = t.batch_size * t.ada_interval / (t.ada_kimg * 1000)
        direction = 1.0 if sign_sum / count > t.ada_target else -1.0
        self.augment_p = min(max(self.augment_p + direction * rate, 0.0), 1.0)

    def _adversary_update(self, adv: Adversary, real, real_labels, fake, fake_labels, purpose: int) -> None:
        cfg, spec, net = self.cfg, adv.spec, adv.net
        with self._autocast():
            real = self._augment(real, DRAW_AUGMENT_REAL, purpose)
            fake = self._augment(fake, DRAW_AUGMENT_FAKE, purpose)
            real_logits = net(real, real_labels)  # real and fake apart: BatchNorm sees one kind at a time
            fake_logits = net(fake, fake_labels)
            if spec.loss.uses_targets:
                real_t, fake_t = losses.d_targets(
                    cfg.train.batch_size,
                    cfg.loss.label_smoothing,
                    cfg.loss.label_smoothing_mode,
                    cfg.loss.label_flip,
                    generator=self._generator(DRAW_TARGETS, purpose),
                )
                targets = (real_t[self.local].to(self.device), fake_t[self.local].to(self.device))
                loss = spec.loss.d(real_logits.float(), fake_logits.float(), *targets)
            else:
                loss = spec.loss.d(real_logits.float(), fake_logits.float())
        terms = [loss]  # D's objective: the loss and its penalties, summed once below
        if spec.name == "D" and cfg.loss.lecam:
            penalty = losses.lecam(real_logits.float(), fake_logits.float(), *self._lecam_ema)
            terms.append(cfg.loss.lecam * penalty)
            self._track(f"{spec.metric}_lecam", penalty)
            self._follow_lecam_averages(real_logits, fake_logits)
        if spec.name == "D" and cfg.train.ada_target is not None:
            self._real_sign += torch.stack(
                [real_logits.detach().float().sign().sum(), real_logits.new_tensor(real_logits.numel())]
            )
        if (spec.r1_gamma or spec.r2_gamma) and self.step % cfg.loss.reg_interval == 0 and purpose == 0:
            interval = cfg.loss.reg_interval  # lazy: a larger weight, less often
            for name, gamma, images, labels in (
                ("r1", spec.r1_gamma, real, real_labels),
                ("r2", spec.r2_gamma, fake, fake_labels),
            ):
                if gamma:
                    penalty = losses.gradient_norm_penalty(net, images, labels)
                    terms.append((gamma / 2) * interval * penalty)
                    self._track(f"{spec.metric}_{name}", penalty)
        if spec.gp_weight:
            alpha = torch.rand(cfg.train.batch_size, generator=self._generator(DRAW_PENALTY, purpose))[self.local]
            penalty = losses.gradient_penalty(net, real, fake, real_labels, alpha)
            terms.append(spec.gp_weight * penalty)
            self._track(f"{spec.metric}_gp", penalty)
        total = sum(terms)
        self._track(f"{spec.metric}_loss", loss)
        self._track(f"{spec.metric}_accuracy", losses.d_accuracy(real_logits, fake_logits))
        threshold = cfg.train.d_loss_threshold
        if threshold is not None and all_reduce_mean(loss).item() <= threshold:
            self.d_skipped += 1
            return
        adv.optimizer.zero_grad(set_to_none=True)
        self.scaler_D.scale(total).backward()
        self.scaler_D.step(adv.optimizer)
        self.scaler_D.update()
        if spec.clip is not None:
            with torch.no_grad():
                for p in net.parameters():
                    p.clamp_(-spec.clip, spec.clip)

    @torch.no_grad()
    def _follow_lecam_averages(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
        """The global batch's mean D(real) and D(fake) into LeCam's averages (the first batch sets them)."""
        means = all_reduce_mean(torch.stack([real_logits.float().mean(), fake_logits.float().mean()]))
        decay = self.cfg.loss.lecam_decay if self.step else 0.0
        self._lecam_ema = decay * self._lecam_ema + (1 - decay) * means  # a new tensor: the graph keeps the old

    def _generator_update(self, fake: torch.Tensor, fake_labels, real: torch.Tensor, real_labels) -> None:
        seen = self._augment(fake, DRAW_AUGMENT_G, 0)  # what D sees of G's samples
        with contextlib.ExitStack() as stack:
            for adv in self.adversaries:
                stack.enter_context(no_sync(adv.net))
                adv.net.requires_grad_(False)  # G's loss needs no gradients of D's weights
                stack.callback(adv.net.requires_grad_, True)
            with self._autocast():
                loss = sum(
                    adv.spec.g_weight
                    * adv.spec.loss.g(adv.net(seen, fake_labels).float(), self._paired_real(adv, real, real_labels))
                    for adv in self.adversaries
                )
            self._track("g_loss", loss)
            threshold = self.cfg.train.g_loss_threshold
            if threshold is not None and all_reduce_mean(loss).item() <= threshold:
                self.g_skipped += 1
                return
            self.opt_G.zero_grad(set_to_none=True)
            self.scaler_G.scale(loss).backward()
        self.scaler_G.unscale_(self.opt_G)
        grads = [p.grad for p in self.G.parameters() if p.grad is not None]
        self._track("g_grad_norm", torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
        self.scaler_G.step(self.opt_G)
        self.scaler_G.update()
        if self.G_ema is not None:
            self._update_ema()

    @torch.no_grad()
    def _paired_real(self, adv: Adversary, real: torch.Tensor, real_labels) -> torch.Tensor | None:
        """D's logits on the last real batch (augmented as D sees reals) for relativistic G losses."""
        if not adv.spec.loss.pairs_real:
            return None
        return adv.net(self._augment(real, DRAW_AUGMENT_REAL, self.cfg.train.n_critic), real_labels).float()

    def ema_decay(self) -> float:
        """The EMA's decay at this step: `train.ema` warmed up from 0.1, or the decay that halves a weight
        every `ema_kimg` thousand images, that half-life held to `ema_rampup` x the images seen so far."""
        t = self.cfg.train
        if t.ema_kimg is None:
            return min(t.ema, (1 + self.step) / (10 + self.step))  # warm-up: forget the random start
        half_life = t.ema_kimg * 1000
        if t.ema_rampup is not None:
            half_life = min(half_life, (self.step + 1) * t.batch_size * t.ema_rampup)
        return 0.5 ** (t.batch_size / half_life)

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.ema_decay()
        G = unwrap(self.G)
        ema_params = list(self.G_ema.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in G.parameters()], 1.0 - decay)
        for ema_buffer, buffer in zip(self.G_ema.buffers(), G.buffers()):
            ema_buffer.copy_(buffer)

    @torch.no_grad()
    def average_buffers(self) -> None:
        """BatchNorm running statistics averaged over ranks (DDP does not broadcast them; see ray_train),
        the EMA copy's too: it is what evaluations sample from."""
        if self.world_size == 1:
            return
        nets = [unwrap(self.G), *(unwrap(adv.net) for adv in self.adversaries)]
        for net in nets + ([self.G_ema] if self.G_ema is not None else []):
            for buffer in net.buffers():
                if buffer.is_floating_point():
                    buffer.copy_(all_reduce_mean(buffer))

    @torch.no_grad()
    def recalibrate_sampler(self) -> None:
        """BatchNorm statistics of the EMA generator's own: the ones copied from G each step belong to
        G's weights, not to the averaged ones (digits_fid recipe at step 5,000: FID to digits:test
        0.647 -> 0.596). Same latents on every rank, so the ranks stay equal."""
        if self.G_ema is None:
            return
        norms = [m for m in self.G_ema.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batches below
        g = torch.Generator().manual_seed(self.cfg.seed)
        batch = self.cfg.train.batch_size
        self.G_ema.train()
        with self._autocast():
            for _ in range(STANDING_BATCHES):
                z = torch.randn(batch, self.cfg.model.latent_dim, generator=g).to(self.device)
                labels = torch.randint(self.num_classes, (batch,), generator=g) if self.conditional else None
                self.G_ema(z, None if labels is None else labels.to(self.device))
        self.G_ema.eval()
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum

    # -- metrics --------------------------------------------------------------------------------

    def _track(self, name: str, value: torch.Tensor) -> None:
        value = value.detach().float()
        self._sums[name] = self._sums[name] + value if name in self._sums else value
        self._counts[name] = self._counts.get(name, 0) + 1

    def pop_metrics(self) -> dict[str, float]:
        """Each metric's mean over ranks and over the times it was tracked since the last call (one sync
        here, none per step), plus skip counts."""
        names = sorted(self._sums)
        sums = torch.stack([self._sums[name] for name in names]) if names else torch.zeros(0)
        counts = torch.tensor([float(self._counts[name]) for name in names], device=sums.device)
        totals = all_reduce_sum(torch.cat([sums, counts]))  # sums and counts in one all_reduce
        means = (totals[: len(names)] / totals[len(names) :]).tolist()  # same on every rank
        out = dict(zip(names, means))
        out.update(d_skipped=self.d_skipped, g_skipped=self.g_skipped)
        if self.cfg.train.augment:
            out["augment_p"] = self.augment_p
        out.update(
            {f"lr_{name.lower()}": opt.param_groups[0]["lr"] for name, opt, _ in self._optimizers()}
        )  # PBT may change them
        self._sums, self._counts = {}, {}
        return out

    def _optimizers(self):
        """(name, optimizer, its config) for G and each adversary."""
        yield "G", self.opt_G, self.cfg.optim.g
        for adv in self.adversaries:
            yield adv.spec.name, adv.optimizer, adv.opt_cfg

    def set_progress(self, progress: float) -> None:
        """Move the learning-rate schedules (`optim.*.lr_end`) to `progress` through the run; the loop calls
        it at report steps, where every rank agrees on the run's progress."""
        self.progress = progress
        for _, optimizer, cfg in self._optimizers():
            for group in optimizer.param_groups:
                group["lr"] = scheduled_lr(cfg, progress)

    # -- sampling and state ---------------------------------------------------------------------

    @property
    def sampler(self) -> nn.Module:
        """The generator used for samples and evaluation: the EMA copy when there is one."""
        return self.G_ema if self.G_ema is not None else unwrap(self.G)

    def state_dict(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "trained_s": self.trained_s,
            "progress": self.progress,
            "d_skipped": self.d_skipped,
            "g_skipped": self.g_skipped,
            "G": unwrap(self.G).state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "scaler_G": self.scaler_G.state_dict(),
            "scaler_D": self.scaler_D.state_dict(),
            "augment_p": self.augment_p,
            "real_sign": self._real_sign.cpu(),
            "lecam_ema": self._lecam_ema.cpu(),
        }
        for adv in self.adversaries:
            state[adv.spec.name] = unwrap(adv.net).state_dict()
            state[f"opt_{adv.spec.name}"] = adv.optimizer.state_dict()
        if self.G_ema is not None:
            state["G_ema"] = self.G_ema.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore everything, then apply the current config's optimizer hyperparameters again."""
        self.step = int(state["step"])
        self.d_skipped, self.g_skipped = int(state["d_skipped"]), int(state["g_skipped"])
        self.trained_s = float(state.get("trained_s", 0.0))  # older checkpoints did not count it
        self.progress = float(state.get("progress", 0.0))
        if (
            self.cfg.train.ada_target is not None and "augment_p" in state
        ):  # adapted: the checkpoint's, not the start value
            self.augment_p = float(state["augment_p"])
            self._real_sign = state["real_sign"].to(self.device)
        if "lecam_ema" in state:  # older checkpoints had no LeCam
            self._lecam_ema = state["lecam_ema"].to(self.device)
        unwrap(self.G).load_state_dict(state["G"])
        self.opt_G.load_state_dict(state["opt_G"])
        apply_hyperparameters(self.opt_G, self.cfg.optim.g, self.progress)
        self.scaler_G.load_state_dict(state["scaler_G"])
        self.scaler_D.load_state_dict(state["scaler_D"])
        for adv in self.adversaries:
            unwrap(adv.net).load_state_dict(state[adv.spec.name])
            adv.optimizer.load_state_dict(state[f"opt_{adv.spec.name}"])
            apply_hyperparameters(adv.optimizer, adv.opt_cfg, self.progress)
        if self.G_ema is not None:
            self.G_ema.load_state_dict(state.get("G_ema", unwrap(self.G).state_dict()))

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None, batch_size: int = 500) -> torch.Tensor:
        """Images in [-1, 1] from `sampler` in eval mode (BatchNorm uses running statistics)."""
        return generate(self.sampler, z, labels, batch_size, self.device)
