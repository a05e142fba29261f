"""The built-in pruning methods, registered by name in :data:`~kwta_robust.sparsity.config.METHODS`.

Each method installs masks on the selected layers and trains through ``ctx.trainer``; the caller
(:func:`~kwta_robust.sparsity.pipeline.train_pruned`) folds the masks and measures the result. Each checks the
config keys it owns (:meth:`~kwta_robust.sparsity.config.PruningMethod.check_params`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from kwta_robust.errors import ConfigError

from kwta_robust.sparsity.allocation import DISTRIBUTIONS, prune_by_scores
from kwta_robust.sparsity.config import PruningConfig, PruningMethod, in_range, register_pruning_method, require
from kwta_robust.sparsity.early_bird import EarlyBirdDetector
from kwta_robust.sparsity.foresight import grasp_scores, snip_scores
from kwta_robust.sparsity.magnitude import capture_state, prune_and_retrain, retrain_segment, rewind
from kwta_robust.sparsity.masks import apply_masks, enforce_masks, measure_sparsity
from kwta_robust.sparsity.rigl import RigL
from kwta_robust.sparsity.segments import PruningContext, TrainSegment

logger = logging.getLogger(__name__)

BOTH_SCOPES: tuple[str, ...] = ("layerwise", "global")


class MagnitudeMethod(PruningMethod):
    """Train dense, prune by ``|w|`` (one-shot or iterative), retrain (finetune / rewind weights / rewind LR)."""

    timing = "after-training"
    scopes = BOTH_SCOPES
    supports_rounds = True

    def __init__(self, name: str, default_scope: str) -> None:
        self.name = name
        self.default_scope = default_scope
        self.description = f"{default_scope} magnitude pruning after training (Han et al. 2015)"

    def run(self, model: nn.Module, modules: Mapping[str, nn.Module], cfg: PruningConfig,
            ctx: PruningContext) -> dict[str, Any]:
        records = prune_and_retrain(
            model, modules, ctx.trainer,
            sparsity=cfg.sparsity, scope=cfg.effective_scope,  # type: ignore[arg-type]
            rounds=cfg.rounds, retrain=cfg.retrain,  # type: ignore[arg-type]
            train_epochs=ctx.train_epochs, rewind_epoch=cfg.rewind_epoch, retrain_epochs=cfg.retrain_epochs,
            finetune_lr=cfg.finetune_lr,
        )
        return {"rounds": [r.to_dict() for r in records]}


register_pruning_method("magnitude", "layer-wise magnitude pruning after training (Han et al. 2015)")(
    lambda: MagnitudeMethod("magnitude", "layerwise"))
register_pruning_method("global-magnitude", "global magnitude pruning after training (Han et al. 2015)")(
    lambda: MagnitudeMethod("global-magnitude", "global"))


ScoreFn = Callable[..., Mapping[str, Tensor]]


class ForesightMethod(PruningMethod):
    """Prune once at initialisation by a data-dependent saliency (SNIP, GraSP), then train the sparse network."""

    timing = "at-init"
    scopes = BOTH_SCOPES
    default_scope = "global"
    supports_rounds = False

    def __init__(self, name: str, scores: ScoreFn, description: str) -> None:
        self.name = name
        self.description = description
        self._scores = scores

    def check_params(self, cfg: PruningConfig) -> None:
        require(cfg, "score_batches", cfg.score_batches >= 1, "an integer >= 1")
        if self.name == "grasp":
            require(cfg, "grasp_temperature", in_range(cfg.grasp_temperature, 0.0, float("inf")),
                    "a finite number > 0")

    def run(self, model: nn.Module, modules: Mapping[str, nn.Module], cfg: PruningConfig,
            ctx: PruningContext) -> dict[str, Any]:
        batches = list(ctx.score_batches(cfg.score_batches))
        extra = {"temperature": cfg.grasp_temperature} if self.name == "grasp" else {}
        scores = self._scores(model, modules, batches, **extra)
        if any(bool(torch.isnan(score).any()) for score in scores.values()):
            hint = (f"pruning.grasp_temperature: GraSP scores at temperature {cfg.grasp_temperature:g} hold NaN (the "
                    "logits divided by it overflow); raise it (default 200)") if self.name == "grasp" else (
                    f"pruning.method: {self.name} scores hold NaN at initialisation; check the model's forward pass")
            raise ConfigError(hint)
        prune_by_scores(modules, scores, cfg.sparsity, cfg.effective_scope)  # type: ignore[arg-type]
        at_init = measure_sparsity(model).overall_of(modules)
        logger.info("%s at initialisation: measured sparsity %.4f", self.name, at_init)
        ctx.trainer(model, TrainSegment("sparse", ctx.train_epochs))
        enforce_masks(modules)
        return {"score_batches": len(batches), "sparsity_at_init": at_init, **extra}


_SNIP = "SNIP connection sensitivity |g*w| at init (Lee et al., ICLR 2019)"
_GRASP = "GraSP gradient-flow score w*Hg at init (Wang et al., ICLR 2020)"
register_pruning_method("snip", _SNIP)(lambda: ForesightMethod("snip", snip_scores, _SNIP))
register_pruning_method("grasp", _GRASP)(lambda: ForesightMethod("grasp", grasp_scores, _GRASP))


@register_pruning_method("rigl")
class RigLMethod(PruningMethod):
    """Sparse from the start: random masks (ERK or uniform per-layer sparsity), RigL drop/grow updates during
    training (Evci et al., ICML 2020)."""

    name = "rigl"
    timing = "during-training"
    scopes = ("layerwise",)
    default_scope = "layerwise"
    supports_rounds = False
    description = "RigL dynamic sparse training: drop by |w|, grow by |grad| (Evci et al., ICML 2020)"

    def check_params(self, cfg: PruningConfig) -> None:
        require(cfg, "rigl_interval", cfg.rigl_interval >= 1, "an integer >= 1")
        require(cfg, "rigl_alpha", in_range(cfg.rigl_alpha, 0.0, 1.0), "a number in (0, 1]")
        require(cfg, "rigl_end_fraction", in_range(cfg.rigl_end_fraction, 0.0, 1.0), "a number in (0, 1]")
        require(cfg, "rigl_distribution", cfg.rigl_distribution in DISTRIBUTIONS, f"one of {', '.join(DISTRIBUTIONS)}")

    def run(self, model: nn.Module, modules: Mapping[str, nn.Module], cfg: PruningConfig,
            ctx: PruningContext) -> dict[str, Any]:
        rigl = RigL(
            modules, cfg.sparsity, total_steps=ctx.train_epochs * ctx.steps_per_epoch,
            update_interval=cfg.rigl_interval, alpha=cfg.rigl_alpha, end_fraction=cfg.rigl_end_fraction,
            seed=ctx.seed if cfg.seed is None else cfg.seed, distribution=cfg.rigl_distribution,
        )
        rigl.install()
        try:
            ctx.trainer(model, TrainSegment("rigl", ctx.train_epochs), step_hook=rigl.after_step)
        finally:
            rigl.remove()
        enforce_masks(modules)
        return {
            "distribution": rigl.distribution,
            "layer_sparsity": dict(rigl.layer_sparsity),
            "total_steps": rigl.total_steps,
            "end_step": rigl.end_step,
            "updates": [{"step": u.step, "fraction": u.fraction, "moved": u.total_moved} for u in rigl.history],
            "connections_moved": sum(u.total_moved for u in rigl.history),
        }


@register_pruning_method("early-bird")
class EarlyBirdMethod(PruningMethod):
    """Train dense until the magnitude mask stops moving (Early-Bird ticket), prune to it, retrain."""

    name = "early-bird"
    timing = "during-training"
    scopes = BOTH_SCOPES
    default_scope = "global"
    supports_rounds = False
    description = "Early-Bird ticket: magnitude mask drawn once it stops changing (You et al., ICLR 2020)"

    def check_params(self, cfg: PruningConfig) -> None:
        require(cfg, "early_bird_window", cfg.early_bird_window >= 1, "an integer >= 1")
        require(cfg, "early_bird_threshold", in_range(cfg.early_bird_threshold, 0.0, 1.0), "a number in (0, 1]")

    def run(self, model: nn.Module, modules: Mapping[str, nn.Module], cfg: PruningConfig,
            ctx: PruningContext) -> dict[str, Any]:
        detector = EarlyBirdDetector(modules, cfg.sparsity, cfg.effective_scope,  # type: ignore[arg-type]
                                     window=cfg.early_bird_window, threshold=cfg.early_bird_threshold)
        snapshot: dict[str, dict[str, Tensor]] = {}
        want_rewind = cfg.retrain == "rewind-weights"
        if want_rewind and cfg.rewind_epoch == 0:
            snapshot["state"] = capture_state(model)
        detector.update(0)
        epochs_run = {"n": 0}

        def on_epoch(m: nn.Module, epochs_done: int) -> bool:
            epochs_run["n"] = epochs_done
            if want_rewind and epochs_done == cfg.rewind_epoch:
                snapshot["state"] = capture_state(m)
            return detector.update(epochs_done)

        ctx.trainer(model, TrainSegment("early-bird-search", ctx.train_epochs), epoch_callback=on_epoch)
        ticket = detector.ticket if detector.ticket is not None else detector.current_mask()
        if detector.found_epoch is None:
            logger.warning("no Early-Bird ticket within %d epochs (threshold %.3f); using the final mask",
                           ctx.train_epochs, cfg.early_bird_threshold)
        apply_masks(modules, ticket)
        if want_rewind:
            if "state" not in snapshot:
                raise ConfigError(f"pruning.rewind_epoch: the Early-Bird search stopped at epoch {epochs_run['n']}, "
                                  f"before the rewind epoch {cfg.rewind_epoch}; lower pruning.rewind_epoch")
            rewind(model, snapshot["state"])
        segment = retrain_segment(cfg.retrain, 1, ctx.train_epochs, cfg.rewind_epoch,  # type: ignore[arg-type]
                                  cfg.retrain_epochs, cfg.finetune_lr)
        if segment.epochs > 0:
            ctx.trainer(model, segment)
        enforce_masks(modules)
        return {
            "early_bird_epoch": detector.found_epoch,
            "search_epochs": epochs_run["n"],
            "mask_distances": [{"epoch": e, "distance": d} for e, d in detector.distances],
        }
