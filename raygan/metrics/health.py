"""The GAN health monitor: the three failures the source projects fought by eye, as rules.

    monitor = HealthMonitor(cfg.health, stop_on=cfg.train.stop_on)
    flags = monitor.observe(step, metrics)   # after every evaluation; metrics hold losses, fid, modes ...
    monitor.stop_reason                      # set once a condition named in stop_on fires

Rules (thresholds in the config's `health` section):
- nan: any loss is NaN or infinite.
- collapse (mode collapse): on labelled data, samples cover fewer than `collapse_coverage` of the classes
  as many real draws would cover, or the KL divergence of their class distribution from the real one
  exceeds what as many real draws show by more than `collapse_kl`;
  on any data, feature diversity of a fixed latent batch falls under `collapse_diversity` x the real data's.
- diminished_gradient: D wins outright, its loss under `d_win_loss` and accuracy over `d_win_accuracy`,
  for `window` evaluations in a row (G then learns nothing); for D losses with a floor (gan, hinge, rpgan,
  combined: a finite `d_min` in losses.LOSSES).
- non_convergence: `window` evaluations after its best, FID is over `fid_rise` x its best (training went
  past the equilibrium point), or G's loss oscillates (std/mean over `oscillation` across `window`
  evaluations) while FID sets no new best.
"""

# no `from __future__ import annotations`: Python 3.11's TypedDict (HealthSummary) cannot see Required in a string
import math
import statistics
from typing import Any, Required, TypedDict

from raygan.config import HEALTH_CONDITIONS, HealthConfig


class HealthSummary(TypedDict, total=False):
    """`HealthMonitor.summary()`: the `health` object of an evaluation's report (`raygan.train.train_report`)."""

    status: Required[str]  # "healthy", or the conditions active at the last evaluation, comma-separated
    flags: Required[dict[str, bool]]  # each of config.HEALTH_CONDITIONS -> active now
    events: Required[list[dict[str, Any]]]  # step, condition, detail: where each condition first fired
    stop_reason: Required[str | None]  # why the run stops (a condition in train.stop_on, patience, time budget)
    best_fid: Required[float | None]
    best_step: Required[int | None]
    modes_covered: int  # copied from the evaluation where it measured them
    modes_total: int
    mode_kl: float
    diversity: float


class HealthMonitor:
    def __init__(
        self,
        cfg: HealthConfig,
        stop_on: tuple[str, ...] = (),
        patience: int | None = None,
        d_loss_is_bounded: bool = True,  # a floor in losses.LOSSES (d_min); a Wasserstein critic has none
    ):
        self.cfg, self.stop_on, self.patience = cfg, tuple(stop_on), patience
        self.d_loss_is_bounded = d_loss_is_bounded
        self.history: list[dict[str, float]] = []  # per evaluation: step, fid, d_loss, d_accuracy, g_loss
        self.events: list[dict[str, Any]] = []  # the first evaluation at which each condition fired
        self.best_fid: float | None = None
        self.best_step: int | None = None
        self.stop_reason: str | None = None
        self.last: dict[str, Any] = {}

    # -- the rules ------------------------------------------------------------------------------

    def _nan(self, metrics: dict) -> str | None:
        bad = [k for k, v in metrics.items() if k.endswith("_loss") and not math.isfinite(v)]
        return f"non-finite {', '.join(bad)}" if bad else None

    def _collapse(self, metrics: dict) -> str | None:
        c = self.cfg
        covered, classes = metrics.get("modes_covered"), metrics.get("modes_total")
        expected = metrics.get("modes_expected", classes)  # real draws of the same number reach this many
        if covered is not None and expected and covered < c.collapse_coverage * expected:
            real_sample = f" (as many real draws: {expected:.0f})" if expected < classes - 0.5 else ""
            return f"samples cover {covered} of {classes} classes{real_sample}"
        kl, floor = metrics.get("mode_kl"), metrics.get("mode_kl_floor", 0.0)
        if kl is not None and kl - floor > c.collapse_kl:
            real_sample = f" (as many real draws: {floor:.2f})" if floor >= 0.05 else ""
            return f"class distribution KL {kl:.2f} from the real one{real_sample}"
        diversity = metrics.get("diversity")
        if diversity is not None and diversity < c.collapse_diversity:
            return f"feature diversity {diversity:.2f} of the real data's"
        return None

    def _diminished_gradient(self) -> str | None:
        c = self.cfg
        recent = self.history[-c.window :]
        if not self.d_loss_is_bounded or len(recent) < c.window:
            return None
        winning = all(
            h.get("d_loss", math.inf) < c.d_win_loss and h.get("d_accuracy", 0.0) > c.d_win_accuracy for h in recent
        )
        if winning:
            return f"D loss < {c.d_win_loss} and accuracy > {c.d_win_accuracy} for {c.window} evaluations"
        return None

    def _non_convergence(self) -> str | None:
        c = self.cfg
        if self.best_fid is None or len(self.history) < c.window:
            return None
        since_best = sum(1 for h in self.history if h["step"] > self.best_step)
        if since_best < c.window:
            return None
        fid = self.history[-1].get("fid")
        if fid is not None and fid > c.fid_rise * self.best_fid:
            return f"FID {fid:.2f} is {fid / self.best_fid:.1f}x its best {self.best_fid:.2f} (step {self.best_step})"
        g_losses = [h["g_loss"] for h in self.history[-c.window :] if "g_loss" in h]
        if len(g_losses) == c.window and statistics.fmean(g_losses) != 0:
            swing = statistics.pstdev(g_losses) / abs(statistics.fmean(g_losses))
            if swing > c.oscillation:
                return f"G loss oscillates (std/mean {swing:.2f}) with no new best FID for {since_best} evaluations"
        return None

    # -- observing ------------------------------------------------------------------------------

    def observe(self, step: int, metrics: dict) -> dict[str, Any]:
        """Record one evaluation; returns flat health metrics (health_<condition>: 0/1, stop_reason)."""
        record = {"step": step}
        for key in ("d_loss", "d_accuracy", "fid", "g_loss"):
            if metrics.get(key) is not None:
                record[key] = metrics[key]
        self.history.append(record)
        fid = metrics.get("fid")
        new_best = fid is not None and math.isfinite(fid) and (self.best_fid is None or fid < self.best_fid)
        if new_best:
            self.best_fid, self.best_step = fid, step
        fired = {
            "nan": self._nan(metrics),
            "collapse": self._collapse(metrics),
            "diminished_gradient": self._diminished_gradient(),
            "non_convergence": self._non_convergence(),
        }
        flags = {}
        for condition, detail in fired.items():
            flags[f"health_{condition}"] = int(detail is not None)
            if detail is None:
                continue
            if not any(e["condition"] == condition for e in self.events):
                self.events.append({"step": step, "condition": condition, "detail": detail})
            if condition in self.stop_on and self.stop_reason is None:
                self.stop_reason = f"{condition}: {detail}"
        if self.patience and self.stop_reason is None and self.best_step is not None:
            waited = sum(1 for h in self.history if h["step"] > self.best_step)
            if waited >= self.patience:
                best = f"best {self.best_fid:.2f} at step {self.best_step}"
                self.stop_reason = f"patience: no new best FID for {waited} evaluations ({best})"
        self.last = {"step": step, **{k: v for k, v in fired.items()}}
        return {**flags, "new_best": int(new_best), "best_fid": self.best_fid, "best_step": self.best_step}

    def stop(self, reason: str) -> None:
        """Stop for a reason outside the monitor's rules (the time budget), unless a rule already stopped the run."""
        self.stop_reason = self.stop_reason or reason

    def summary(self, metrics: dict | None = None) -> HealthSummary:
        """The `health` object of a run's result."""
        active = [c for c in HEALTH_CONDITIONS if self.last.get(c)]
        out: HealthSummary = {
            "status": "healthy" if not active else ", ".join(active),
            "flags": {c: bool(self.last.get(c)) for c in HEALTH_CONDITIONS},
            "events": list(self.events),
            "stop_reason": self.stop_reason,
            "best_fid": self.best_fid,
            "best_step": self.best_step,
        }
        for key in ("modes_covered", "modes_total", "mode_kl", "diversity"):
            if metrics and metrics.get(key) is not None:
                out[key] = metrics[key]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "events": self.events,
            "best_fid": self.best_fid,
            "best_step": self.best_step,
            "stop_reason": self.stop_reason,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history, self.events = list(state["history"]), list(state["events"])
        self.best_fid, self.best_step, self.stop_reason = state["best_fid"], state["best_step"], state["stop_reason"]
