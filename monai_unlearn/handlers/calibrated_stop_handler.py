"""Stop unlearning at a calibrated forget target, keep the best state seen, and rewind to it at the end."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_unlearn.core.batch import default_prepare_batch
from monai_unlearn.core.norm_stats import has_running_stats, reestimate_running_stats, remain_images
from monai_unlearn.core.regime import decide_regime
from monai_unlearn.metrics.calibration import (
    MARGIN_Z, accuracy_on_labels, calibration_target, loader_labels, per_label_accuracy, target_margin, weighted_target)
from monai_unlearn.metrics.headline import forget_score
from monai_unlearn.metrics.segmentation import evaluate_segmentation
from monai_unlearn.metrics.transfer import source_transfer

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["CalibratedStopHandler", "regime_stop_handler", "default_check_interval"]

logger = logging.getLogger(__name__)

#: how far the retention guard may fall below the original's before a state is not admissible (the default)
MAX_GUARD_DROP = 0.02
#: checks in a row without coming closer before a partial or cases run ends (``regime_stop_handler``'s default): on
#: the scenario benchmark only scanner_b's cases, whose Dice the boundary targets barely move, end this way (3 ends
#: them a pass sooner than 4 did); every other partial run there stops at its target first
DEFAULT_STALL_LIMIT = 3
#: a partial target's sampling margin above which the run warns that its held-out data calibrates it only roughly
WIDE_MARGIN = 0.1


class CalibratedStopHandler:
    """Checks the forget score against a target every ``interval`` epochs or iterations, stops once it is reached,
    and rewinds the network to the best state it saw (SCRUB-style) when the run ends.

    The target comes from data the run already has (``monai_unlearn.metrics.calibration``): for a withdrawn class
    the score a model that never saw the class gets (0), for partial forgetting the original model's accuracy on
    held-out items of the same labels. No retrained model is involved.

    At each check ``score_fn(network)`` (e.g. forget accuracy) and ``guard_fn(network)`` (e.g. accuracy on held-out
    items of the kept labels) are computed, and the run stops when the score is at or below ``target + tolerance``
    (or ``target + margin``, the target's sampling noise, when that is larger).
    A state is *admissible* when its guard has not fallen more than ``max_guard_drop`` below the original's.

    - ``mode="reach"`` (a withdrawn class: the target is a bound that must be met): a state that meets the target
      is best, since forgetting is required; before one does, the admissible state closest to the target is.
      Once the target is met the run stops when the best state is admissible and ``patience`` checks (0: none)
      brought no higher guard; while the best state is not admissible, with ``repair_at_target`` (or
      ``patience > 0``) the run goes on while the remain term repairs retention, to its budget at most, and
      without it stops at once. The best state is the one that meets the target with the highest guard. With
      ``finish_repair``, an admissible state at the target whose guard is still below the original's and higher
      than at the last check does not stop the run either: retention is still coming back, and the next check
      decides (the rewind keeps the better of the two).
    - ``mode="closest"`` (partial forgetting: the target is a level to match, overshooting it over-forgets): the
      admissible state whose score is closest to the target is best, the original included, so a run that only
      damages retention or jumps far below the target returns to a better state. With ``stall_limit`` a run that
      stops coming closer (by at least ``tolerance``) ends early. With ``repair_at_target`` the target stops the run
      only in an admissible state, and a check at the target whose guard is the best of such checks so far counts
      as coming closer (retention is being repaired).

    A fallen guard can come from the batch-norm running statistics rather than the weights: the unlearning batches
    are half forget items, so the statistics drift toward the data being forgotten. When a check finds the guard
    fallen and ``renormalize_fn`` is given, ``renormalize_fn(network)`` estimates the statistics again from kept data
    (``regime_stop_handler`` gives one, see ``monai_unlearn.core.norm_stats``) and the state is checked again; the
    check's record says so (``"renormalized"``). When the engine's unlearner revises the network's head alone (a
    withdrawn class, ``PSGConfig.withdrawn_scope="head"``) and a check at the end of the first pass or later finds the
    guard fallen, the head alone cannot forget without losing retention: the unlearner puts the original head back and
    revises the whole network from there (``"head_given_up"`` in the check's record). At ``Events.COMPLETED`` (also
    after a stop), with ``rewind``, the network gets the best state's weights back if the last state is not it.

    ``engine.state.metrics`` receives ``metric_name`` and ``"guard"``; the epoch's record in
    ``engine.state.pass_history`` gets them too. After the run, ``self.record`` says what happened.

    ``withdrawn_classes`` is data for the trainer, not used by the checks: the classes the regime found withdrawn
    (``regime_stop_handler`` sets it), to give to ``UnlearningTrainer(withdrawn_classes=...)`` so that no boundary
    target takes them. ``unlearn()`` and the bundle's ``unlearn#trainer`` do.

    Args:
        score_fn: ``callable(network) -> float``, the forget score (lower is more forgotten).
        target: the score to reach.
        guard_fn: optional ``callable(network) -> float`` that must not fall (higher is better).
        tolerance: stop when ``score <= target + tolerance``.
        max_guard_drop: how far the guard may fall below the original's before a state is not admissible.
        rewind: restore the best state at the end.
        interval: check every ``interval`` epochs (``epoch_level``) or iterations.
        epoch_level: count ``interval`` in epochs or in iterations (finer stops for large forget sets).
        network: the module to score and rewind; ``None`` uses ``engine.network``.
        metric_name: the key of the score in ``engine.state.metrics``.
        mode: ``"reach"`` or ``"closest"`` (see above).
        patience: ``"reach"`` mode: checks without a better guard to wait for after the target is met in an
            admissible state (0: stop there).
        stall_limit: ``"closest"`` mode: stop after this many checks in a row without a state closer to the target
            by at least ``tolerance`` than the last one that came closer
            (``record["stopped"] == "no_progress"``; 0: never, the budget decides).
        repair_at_target: a state at the target that lost retention does not stop the run. ``"closest"`` mode:
            such a check whose guard is the best of them so far counts as coming closer (retention is being
            repaired); for a retired source unlike every kept one, which is first forgotten together with what
            resembles it. ``"reach"`` mode: the run goes on until a state meets the target with retention kept.
            Off, the target stops the run in any state (and the rewind returns to the best one).
        withdrawn_classes: the classes the regime withdrew, for the trainer (see above); ``None``: none.
        stop_at_start: end the run before its first step when the original already meets the target
            (``record["stopped"] == "target_at_start"``): the forget items are already treated like held-out data of
            their kind, or the withdrawn class is already never predicted on them.
        margin: the sampling noise of the score and the target, when they are measured on few items
            (``monai_unlearn.metrics.calibration.target_margin``, which ``regime_stop_handler`` gives for partial
            forgetting): a score up to ``max(tolerance, margin)`` above the target meets it, at the start and at every
            check, since the data cannot tell it from the target. Coming closer is still counted in ``tolerance``.
        renormalize_fn: optional ``callable(network)`` for a check whose guard fell (see above).
        finish_repair: ``"reach"`` mode: go on past an admissible state at the target while its guard is below the
            original's and still rising (see above).
        original_guard: the guard of the network as the run starts (the original), when the caller has it already
            (``regime_stop_handler`` evaluates the original's held-out accuracy once for the target and the guard);
            ``None`` evaluates ``guard_fn`` at the start.
        name: logger name; ``None`` uses the engine's logger.

    Raises:
        ValueError: for ``interval < 1``, a negative tolerance or guard drop, or an unknown mode.
    """

    def __init__(
        self,
        score_fn: Callable[[torch.nn.Module], float],
        target: float,
        guard_fn: Callable[[torch.nn.Module], float] | None = None,
        tolerance: float = 0.01,
        max_guard_drop: float = MAX_GUARD_DROP,
        rewind: bool = True,
        interval: int = 1,
        epoch_level: bool = True,
        network: torch.nn.Module | None = None,
        metric_name: str = "forget_accuracy",
        mode: str = "closest",
        patience: int = 0,
        stall_limit: int = 0,
        repair_at_target: bool = False,
        withdrawn_classes: Sequence[int] | None = None,
        stop_at_start: bool = True,
        margin: float = 0.0,
        renormalize_fn: Callable[[torch.nn.Module], Any] | None = None,
        finish_repair: bool = False,
        original_guard: float | None = None,
        name: str | None = None,
    ) -> None:
        if mode not in ("reach", "closest"):
            raise ValueError(f"mode must be 'reach' or 'closest', got {mode!r}.")
        self.mode = mode
        self.patience = int(patience)
        self.stall_limit = int(stall_limit)
        self.repair_at_target = bool(repair_at_target)
        self.withdrawn_classes = sorted({int(c) for c in withdrawn_classes}) if withdrawn_classes else None
        self.stop_at_start = bool(stop_at_start)
        self.margin = float(margin)
        self.renormalize_fn = renormalize_fn
        self.finish_repair = bool(finish_repair)
        self.original_guard = None if original_guard is None else float(original_guard)
        self._stalls = 0
        self._progress_mark = float("inf")
        self._repair_guard = float("-inf")
        if int(interval) != interval or interval < 1:
            raise ValueError(f"interval must be a positive integer, got {interval}.")
        if tolerance < 0 or max_guard_drop < 0 or margin < 0:
            raise ValueError(f"tolerance, margin and max_guard_drop must be >= 0, got {tolerance}, {margin} and "
                             f"{max_guard_drop}.")
        self.score_fn, self.guard_fn = score_fn, guard_fn
        self.target, self.tolerance, self.max_guard_drop = float(target), float(tolerance), float(max_guard_drop)
        self.rewind, self.interval, self.epoch_level = rewind, int(interval), epoch_level
        self.network, self.metric_name = network, metric_name
        self.logger = logging.getLogger(name) if name is not None else None
        self.record: dict[str, Any] = {}
        self._best: tuple[tuple[float, float], int, dict[str, torch.Tensor]] | None = None
        self._guard0: float | None = None
        self._last_checked = -1
        self._best_admissible = True
        self._engine: Any = None

    def attach(self, engine: Engine) -> None:
        """Register the checks on ``engine``; attaching twice to one engine is a no-op."""
        if self.logger is None:
            self.logger = engine.logger
        if engine.has_event_handler(self._started, Events.STARTED):
            return
        self._engine = engine
        engine.add_event_handler(Events.STARTED, self._started)
        event = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
        engine.add_event_handler(event(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _net(self, engine: Engine) -> torch.nn.Module:
        return self.network if self.network is not None else engine.network

    def _log(self, engine: Engine) -> logging.Logger:
        return self.logger if self.logger is not None else engine.logger

    def _meets_target(self, score: float) -> bool:
        return score <= self.target + max(self.tolerance, self.margin)

    def _started(self, engine: Engine) -> None:
        network = self._net(engine)
        score = float(self.score_fn(network))
        if self.guard_fn is None:
            self._guard0 = None
        else:  # the original's guard, unless the caller evaluated it already
            self._guard0 = self.original_guard if self.original_guard is not None else float(self.guard_fn(network))
        self._best = ((1.0, abs(score - self.target)), 0, self._snapshot(network))
        self.record = {"target": self.target, "tolerance": self.tolerance, "margin": self.margin,
                       "original_score": score, "original_guard": self._guard0, "checks": [], "stopped": "budget",
                       "best_iteration": 0, "reached_at": None, "rewound": False}
        self._stalls, self._best_admissible, self._repair_guard = 0, True, float("-inf")
        self._progress_mark = self._best[0][1]  # the original's distance to the target
        if self.stop_at_start and self._meets_target(score):
            # nothing to forget that the data can show: the original already scores like a model that never saw the
            # forget set, within what chance makes of a score and a target on this many items (or below it, where
            # more forgetting would only move away), so no step is taken
            self.record.update({"stopped": "target_at_start", "reached_at": 0, "terminated": True})
            self._last_checked = 0  # the network is the original: nothing to rewind to
            self._log(engine).info(f"CalibratedStopHandler: the original already meets the target "
                                   f"({self.metric_name} {score:.4f}, target {self.target:.4f}"
                                   + (f" + margin {self.margin:.4f}" if self.margin > self.tolerance else "") + "); "
                                   "no unlearning step is needed.")
            engine.terminate()

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs (``UnlearningCheckpointHandler`` saves it): the best state, the original's
        guard, the checks so far and whether the run had stopped."""
        return {"best": self._best, "guard0": self._guard0, "record": self.record, "stalls": self._stalls,
                "last_checked": self._last_checked, "best_admissible": self._best_admissible,
                "repair_guard": self._repair_guard, "progress_mark": self._progress_mark}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore ``state_dict``'s state; a run that had stopped at its target ends again at once."""
        self._best, self._guard0 = state["best"], state["guard0"]
        self.record, self._stalls, self._last_checked = state["record"], state["stalls"], state["last_checked"]
        self._best_admissible = state.get("best_admissible", True)
        self._repair_guard = state.get("repair_guard", float("-inf"))
        self._progress_mark = state.get("progress_mark", self._best[0][1] if self._best else float("inf"))
        unlearner = getattr(self._engine, "unlearner", None)
        if unlearner is not None and any(c.get("head_given_up") for c in self.record.get("checks", [])):
            unlearner.head_given_up = True  # the run had gone on to revise the whole network
        if self.record.get("terminated") and self._engine is not None:
            self._engine.terminate()

    @staticmethod
    def _snapshot(network: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}

    def __call__(self, engine: Engine) -> None:
        """Check the score now; keep the state if it is the best admissible one; stop at the target."""
        network = self._net(engine)
        score, guard, admissible = self._score(network)
        if not admissible and self._give_up_head(engine, score, guard):
            return
        renormalized = not admissible and self.renormalize_fn is not None
        if renormalized:  # the statistics of half-forget batches, or the weights? check again with kept data's
            self.renormalize_fn(network)
            score, guard, admissible = self._score(network)
        iteration = engine.state.iteration
        self._last_checked = iteration
        engine.state.metrics[self.metric_name] = score
        if guard is not None:
            engine.state.metrics["guard"] = guard
        history = getattr(engine.state, "pass_history", None)
        if history and history[-1].get("epoch") == engine.state.epoch:
            history[-1].update({self.metric_name: score, **({"guard": guard} if guard is not None else {})})
        self.record["checks"].append({"epoch": engine.state.epoch, "iteration": iteration, "score": score,
                                      "guard": guard, "admissible": admissible,
                                      **({"renormalized": True} if renormalized else {})})
        reached = self._meets_target(score)
        # the rank of a state, lower is better: in "reach" mode a state that meets the target beats every state that
        # does not, and among those that do the higher guard wins
        if self.mode == "reach" and reached:
            rank: tuple[float, float] = (0.0, -(guard if guard is not None else 0.0))
        else:
            rank = (1.0, abs(score - self.target))
        improved = (admissible or (self.mode == "reach" and reached)) and self._best is not None and rank < self._best[0]
        if improved:
            self._best = (rank, iteration, self._snapshot(network))
            self.record["best_iteration"] = iteration
            self._best_admissible = admissible
        logger = self._log(engine)
        logger.info(f"CalibratedStopHandler: {self.metric_name} {score:.4f} (target {self.target:.4f})"
                    + (f", guard {guard:.4f}" if guard is not None else "") + f" at iteration {iteration}")
        if self.mode == "reach":
            self._after_check_reach(engine, reached, improved, logger)
        elif reached and (admissible or not self.repair_at_target):
            self.record["stopped"] = "target"
            self.record["reached_at"] = iteration
            logger.info(f"CalibratedStopHandler: target reached at epoch {engine.state.epoch}; stopping.")
            self.record["terminated"] = True
            engine.terminate()
        elif self.mode == "closest" and self.stall_limit > 0:
            # a run that no longer comes closer to its level will not reach it: stop and rewind instead of
            # spending the rest of the budget. With repair_at_target a state at the target that lost retention
            # gets here too: a source unlike the kept ones is first forgotten together with what resembles it, and
            # the remain term repairs that afterwards; a check at the target whose guard is the best such guard so
            # far counts as progress, so the run goes on while the repair does
            repairing = self.repair_at_target and reached and guard is not None and guard > self._repair_guard
            if reached and guard is not None:
                self._repair_guard = max(self._repair_guard, guard)
            # coming closer means by at least the tolerance since the last check that did: a score that creeps
            # toward the target by less (the forget Dice of a segmentation scanner's cases, which the boundary
            # targets barely move) is not progress, and would spend the budget for a state the tolerance cannot tell
            # from the last one
            distance = abs(score - self.target)
            progressed = improved and distance <= self._progress_mark - self.tolerance
            if progressed:
                self._progress_mark = distance
            self._stalls = 0 if progressed or repairing else self._stalls + 1
            if self._stalls >= self.stall_limit:
                logger.info(f"CalibratedStopHandler: no state closer to the target for {self.stall_limit} check(s); "
                            "stopping.")
                self.record["stopped"] = "no_progress"
                self.record["terminated"] = True
                engine.terminate()

    def _give_up_head(self, engine: Engine, score: float, guard: float | None) -> bool:
        """A state that lost retention after a whole pass in which only the network's head was revised
        (``PSGConfig.withdrawn_scope``): the head alone cannot move the withdrawn classes away from features the kept
        classes share, so the trainer's unlearner puts the original head back and revises the whole network from
        here (the check is recorded with ``"head_given_up"`` and is never a best state). A check within the first
        pass (a long pass is checked several times) may see the passing damage of the head's first large steps and
        is judged like any other. Returns whether the head was given up."""
        unlearner = getattr(engine, "unlearner", None)
        if unlearner is None or not hasattr(unlearner, "revise_whole_network"):
            return False
        if engine.state.iteration < (engine.state.epoch_length or 0) or not unlearner.revise_whole_network():
            return False
        iteration = engine.state.iteration
        self._last_checked = iteration
        self.record["checks"].append({"epoch": engine.state.epoch, "iteration": iteration, "score": score,
                                      "guard": guard, "admissible": False, "head_given_up": True})
        self._log(engine).info(f"CalibratedStopHandler: revising the head alone lost retention (guard {guard:.4f}, "
                               f"original {self._guard0:.4f}) at iteration {iteration}; back to the original, "
                               "revising the whole network.")
        return True

    def _score(self, network: torch.nn.Module) -> tuple[float, float | None, bool]:
        """The state's score, guard, and whether it is admissible."""
        score = float(self.score_fn(network))
        guard = None if self.guard_fn is None else float(self.guard_fn(network))
        admissible = guard is None or self._guard0 is None or guard >= self._guard0 - self.max_guard_drop
        return score, guard, admissible

    def _after_check_reach(self, engine: Engine, reached: bool, improved: bool, logger: logging.Logger) -> None:
        """``"reach"`` mode: once the target is met, stop when the best state kept retention and ``patience`` checks
        brought no better one; while the best state has not kept it, go on if retention may still be repaired."""
        first = reached and self.record.get("reached_at") is None
        if first:
            self.record["stopped"] = "target"
            self.record["reached_at"] = engine.state.iteration
        if self.record.get("reached_at") is None:
            return
        if not self._best_admissible and (self.repair_at_target or self.patience > 0):
            # the remain term is still repairing what forgetting cost: go on (to the budget at most)
            self._stalls = 0
            if first:
                logger.info(f"CalibratedStopHandler: target reached at epoch {engine.state.epoch}; going on while "
                            "retention is repaired.")
            return
        if self.finish_repair and reached and self._still_repairing():
            self.record["checks"][-1]["repairing"] = True
            logger.info(f"CalibratedStopHandler: target met at epoch {engine.state.epoch} with the guard still "
                        "below the original's and rising; going on for one more check.")
            return
        self._stalls = 0 if first or improved else self._stalls + 1
        if self._stalls >= self.patience:
            logger.info("CalibratedStopHandler: target reached" + (
                f"; no better state for {self.patience} check(s) after it" if self.patience else "")
                + f" at epoch {engine.state.epoch}; stopping.")
            self.record["terminated"] = True
            engine.terminate()
        elif first:
            logger.info(f"CalibratedStopHandler: target reached at epoch {engine.state.epoch}; going on while the "
                        "guard improves.")

    def _still_repairing(self) -> bool:
        """Whether the last check is admissible with a guard below the original's but above the check before (the
        original's guard for the first check)."""
        checks = self.record["checks"]
        guard = checks[-1]["guard"]
        if guard is None or self._guard0 is None or not checks[-1]["admissible"]:
            return False
        before = checks[-2]["guard"] if len(checks) > 1 else self._guard0
        return before < guard < self._guard0

    def _completed(self, engine: Engine) -> None:
        if self._best is None:
            return
        _, best_iteration, state = self._best
        if self.rewind and best_iteration != self._last_checked:
            network = self._net(engine)
            network.load_state_dict({k: v.to(network.state_dict()[k].device) for k, v in state.items()})
            self.record["rewound"] = True
            self._log(engine).info(f"CalibratedStopHandler: rewound to the state of iteration {best_iteration}.")
        self.record["final_iteration"] = engine.state.iteration
        self._best = None  # release the snapshot


def regime_stop_handler(
    regime: str, original: torch.nn.Module, revised: torch.nn.Module, forget_loader: Iterable[Any],
    remain_loader: Iterable[Any] | None, val_loader: Iterable[Any] | None, task: str,
    forget_classes: Sequence[int] | None, device: torch.device | str,
    forget_score_fn: Callable[[torch.nn.Module], float], check_every: int | None = None, rewind: bool = True,
    prepare_batch: Callable = default_prepare_batch, amp: bool = False, num_classes: int | None = None,
    roi_size: Any = None,
    patience: int = 0,
    stall_limit: int = DEFAULT_STALL_LIMIT,
    forget_labels: Sequence[int] | None = None,
    remain_labels: Sequence[int] | None = None,
    transfer_check: bool = True,
    remain_norm_stats: bool = False,
    margin_z: float = MARGIN_Z,
) -> tuple[CalibratedStopHandler, dict[str, Any]]:
    """The ``CalibratedStopHandler`` of a regime (decided from the data for ``"auto"``) and its record.

    Classification: the forget and remain labels decide the regime (``decide_regime``); the target is 0 for a
    withdrawn class, else the original's held-out accuracy on the forget labels (``calibration_target`` over
    ``val_loader``, or over the remain loader with a warning when there is none); the guard is the held-out accuracy
    on the labels that stay. A partial target is met within its sampling noise (``target_margin``, the calibration's
    ``"margin"``): a random few of the training items are often recognised no better than held-out ones, and then
    the run takes no step, since nothing measurable is left to forget. Segmentation: the forgotten classes' Dice goes
    to 0, or the forget cases' Dice to the original's Dice on held-out cases.

    Args:
        regime: ``"auto"`` or one of ``REGIMES``.
        original: the frozen original model (calibration only).
        revised: the network being revised (scored and rewound).
        forget_loader, remain_loader, val_loader: the run's data; ``val_loader`` is held-out data.
        task: ``"classification"`` or ``"segmentation"``.
        forget_classes: segmentation classes forgotten voxel by voxel.
        device: where to evaluate.
        forget_score_fn: ``callable(network) -> float``, the forget score the target is compared with.
        check_every: check every this many iterations; ``None``: every pass, or several times a pass for a long
            one (``default_check_interval``).
        rewind: return to the best state at the end.
        prepare_batch, amp, num_classes, roi_size: as for the evaluation.
        patience: withdrawn classes: checks to go on after the target is met with retention kept, while held-out
            accuracy improves (0: stop at the first such state; going further trains the kept classes beyond what
            a model retrained without the class reaches).
        stall_limit: partial forgetting and cases: checks in a row without coming closer to the target before the
            run stops (and rewinds to the closest state).
        forget_labels, remain_labels: classification: the items' classes when the caller knows them (a bundle's
            datalist); otherwise they are read from the loaders (one pass over each).
        transfer_check: partial forgetting with held-out data: check with random-feature probes
            (``monai_unlearn.metrics.transfer.source_transfer``) whether the kept data carries over to the forget
            items, and scale the target of the shared labels by the probes' ratio when it clearly does not (a
            retired source unlike every kept one).
        remain_norm_stats: at a check whose guard fell, estimate the revised network's batch-norm running statistics
            again from remain batches (up to ``DEFAULT_NORM_STATS_ITEMS`` items; ``monai_unlearn.core.norm_stats``)
            and check again: the statistics of the half-forget unlearning batches, not the weights, may be what lost
            retention. Off by default (``benchmarks/RESULTS_SCENARIOS.md`` has what it changes: a retired scanner unlike
            the kept one ends in a third of the time, but a withdrawn class and 10 % of every class do not gain). No
            effect without batch norm or a remain loader.
        margin_z: partial forgetting: the standard errors of the target's sampling noise within which it counts as
            met (``target_margin``; 0: the tolerance alone, the stricter stop that takes steps whenever the forget
            accuracy is above the target by more than a point).

    Returns:
        the handler, and ``{"regime": decision, "calibration": target record, "check_every": interval,
        "norm_stats": what ``remain_norm_stats`` does (``None`` when off or nothing to estimate)}``.

    Raises:
        ValueError: for an unknown regime, a regime that does not fit the task, or a negative ``margin_z``.
    """
    if margin_z < 0:
        raise ValueError(f"margin_z must be >= 0 (standard errors), got {margin_z}.")
    requested = None if regime == "auto" else regime
    guard_fn, original_guard = None, None
    if task == "segmentation":
        decision = decide_regime(task="segmentation", forget_classes=forget_classes, requested=requested)
        if decision.regime == "segmentation_class" or val_loader is None:
            target = 0.0 if decision.regime == "segmentation_class" else forget_score_fn(original)
            calibration = {"target": target, "notes": [] if decision.regime == "segmentation_class" else [
                "no held-out cases: the target is the original's Dice on the forget cases"]}
        else:
            held_out = evaluate_segmentation(original, val_loader, None, None, num_classes, device, prepare_batch,
                                             amp, roi_size=roi_size)
            calibration = {"target": forget_score(held_out), "notes": ["the original's Dice on held-out cases"]}
    else:
        if forget_labels is None:
            forget_labels = loader_labels(forget_loader, prepare_batch)
        if remain_labels is None:
            remain_labels = loader_labels(remain_loader, prepare_batch) if remain_loader is not None else []
        decision = decide_regime(forget_labels, remain_labels, requested=requested)
        held_out = val_loader
        notes = []
        if held_out is None and decision.regime == "partial":
            held_out = remain_loader
            notes.append("no held-out data given (val_loader): calibrated on the remain loader, which the original "
                         "was trained on, so the target is optimistic")
            logger.warning(notes[-1])
        guard_loader = held_out if held_out is not None else remain_loader
        withdrawn = set(decision.withdrawn_labels)
        # the original's held-out accuracy per label, evaluated once: the partial target and the guard's start
        original_counts = (per_label_accuracy(original, guard_loader, device, prepare_batch)
                           if guard_loader is not None else None)
        if decision.regime == "class":
            calibration = {"target": 0.0, "per_label": {c: 0.0 for c in decision.withdrawn_labels}, "notes": notes}
        else:
            calibration = calibration_target(original, held_out, forget_labels, decision.withdrawn_labels, device,
                                             prepare_batch, counts=original_counts)
            calibration["notes"] = notes + calibration["notes"]
            shared = decision.shared_labels
            if transfer_check and val_loader is not None and shared and remain_loader is not None:
                _scale_by_transfer(calibration, source_transfer(
                    original, forget_loader, remain_loader, val_loader, shared, device, prepare_batch), forget_labels,
                    shared)
            # a forget accuracy this close above the target is the target's, as far as so few items can tell
            calibration["margin"] = target_margin(calibration["per_label"], forget_labels, original_counts or {},
                                                  decision.withdrawn_labels, margin_z)
            _say_if_margin_is_wide(calibration["margin"], calibration["notes"])

        def kept_accuracy_of(counts: dict[int, tuple[int, int]]) -> float:  # held-out accuracy on the labels that stay
            value = accuracy_on_labels(counts, [c for c in counts if c not in withdrawn])
            return 0.0 if value is None else value

        def kept_accuracy(net: torch.nn.Module) -> float:
            return kept_accuracy_of(per_label_accuracy(net, guard_loader, device, prepare_batch))

        guard_fn = kept_accuracy if guard_loader is not None else None
        if original_counts is not None:  # how fine the guard is
            original_guard = kept_accuracy_of(original_counts)
            _say_if_guard_is_coarse(sum(t for c, (_, t) in original_counts.items() if c not in withdrawn),
                                    calibration["notes"])
    logger.info("regime: %s (%s); forget target %.4f", decision.regime, decision.reason, calibration["target"])
    # a withdrawn class must be forgotten (its target is a bound); partial forgetting matches a level
    mode = "reach" if decision.regime in ("class", "segmentation_class") else "closest"
    check_every = check_every or default_check_interval(forget_loader)
    # a withdrawn class is gone when no forget item is given it (a retrained model never predicts it); the other
    # targets are estimates, met within a point (a partial target within its sampling margin, when that is wider)
    tolerance = 0.0 if decision.regime == "class" else 0.01
    unlike_kept = bool((calibration.get("transfer") or {}).get("applies"))
    handler = CalibratedStopHandler(
        forget_score_fn, calibration["target"], guard_fn=guard_fn, tolerance=tolerance, rewind=rewind,
        network=revised, interval=check_every or 1, epoch_level=check_every is None, mode=mode, patience=patience,
        stall_limit=stall_limit if mode == "closest" else 0,
        # a withdrawn class: a state that forgot it but lost retention is repaired by the remain term before the run
        # stops; partial: only for a source unlike the kept ones, which is first forgotten together with what
        # resembles it (elsewhere such a repair does not come, and would cost passes)
        repair_at_target=mode == "reach" or unlike_kept,
        # a withdrawn class gone while held-out accuracy on the kept labels is still coming back: one more check
        # (the first admissible state is otherwise where a strong forget step leaves retention half repaired)
        finish_repair=mode == "reach",
        # no forget item may be moved into a class that is withdrawn: a retrained model never predicts it
        withdrawn_classes=decision.withdrawn_labels, original_guard=original_guard,
        margin=calibration.get("margin", 0.0),
        renormalize_fn=_norm_stats_from(remain_loader, revised, prepare_batch, device) if remain_norm_stats else None)
    norm_stats = ("estimated again from remain data at a check whose guard fell" if handler.renormalize_fn is not None
                  else None)
    return handler, {"regime": decision.to_dict(), "calibration": calibration, "check_every": check_every,
                     "norm_stats": norm_stats}


def _norm_stats_from(remain_loader: Iterable[Any] | None, revised: torch.nn.Module, prepare_batch: Callable,
                     device: torch.device | str) -> Callable[[torch.nn.Module], int] | None:
    """The check's ``renormalize_fn``: batch-norm running statistics estimated from remain batches; ``None`` when there
    is nothing to estimate (no remain loader, or no batch norm that keeps statistics)."""
    if remain_loader is None or not has_running_stats(revised):
        return None

    def estimate(network: torch.nn.Module) -> int:
        return reestimate_running_stats(network, remain_images(remain_loader, prepare_batch, device))

    return estimate


def _say_if_guard_is_coarse(items: int, notes: list[str], max_drop: float = MAX_GUARD_DROP) -> None:
    """Warn (once, in the log and in ``notes``) when the guard's items are too few for one of them to move it by less
    than ``max_drop``: the guard then only sees losses of whole items, not the drop it is meant to bound."""
    if not items or 1.0 / items <= max_drop:
        return
    _warn(f"the retention guard has {items} held-out item(s) of the kept labels: one item moves it by "
          f"{1.0 / items:.3f}, more than the {max_drop} drop it bounds, so it cannot see a smaller loss of retention; "
          "more held-out data (a larger validation split; val_loader= in Python) gives a finer guard", notes)


def _say_if_margin_is_wide(margin: float, notes: list[str], widest: float = WIDE_MARGIN) -> None:
    """Warn (in the log and in ``notes``) when a partial target's sampling margin is wider than ``widest``: so few
    held-out items of the forget labels calibrate it that the stop cannot tell much forgetting from none."""
    if margin <= widest:
        return
    _warn(f"the held-out data has few items of the forget items' labels: the forget target is known only to within "
          f"{margin:.3f} (its sampling noise), and a forget accuracy that close above it counts as reached; more "
          "held-out data (a larger validation split; val_loader= in Python) gives a sharper target", notes)


def _warn(note: str, notes: list[str]) -> None:
    """A warning said in the log and kept in the calibration's ``notes`` (the report and the audit show them)."""
    notes.append(note)
    logger.warning(note)


def _scale_by_transfer(calibration: dict[str, Any], transfer: dict[str, Any], forget_labels: Sequence[int],
                       shared: Sequence[int]) -> None:
    """Scale the shared labels' part of a partial target by the transfer ratio when it applies (in place)."""
    calibration["transfer"] = transfer
    if not transfer["applies"]:
        return
    for label in {int(x) for x in shared} & set(calibration["per_label"]):
        calibration["per_label"][label] *= transfer["ratio"]
    calibration["target"] = weighted_target(calibration["per_label"], forget_labels)
    note = (f"the kept data does not carry over to the forget items: random-feature probes trained on kept items "
            f"recognise {transfer['probe_forget']:.3f} of them against {transfer['probe_held_out']:.3f} of held-out "
            f"items of their labels (z {transfer['z']:.1f}); the shared labels' target is scaled by "
            f"{transfer['ratio']:.3f}")
    calibration["notes"].append(note)
    logger.info("regime: %s", note)


#: a pass of more iterations than this is checked several times (``default_check_interval``)
LONG_PASS = 16
CHECKS_PER_LONG_PASS = 4


def default_check_interval(forget_loader: Iterable[Any]) -> int | None:
    """Iterations between checks when none are set: ``None`` (once a pass) for a short pass; for a pass of more than
    ``LONG_PASS`` iterations (a large forget set) ``CHECKS_PER_LONG_PASS`` checks a pass, so that a run whose target
    is met early stops early instead of finishing the pass (the cost then grows with what must be forgotten, not
    with the size of the forget set)."""
    length = len(forget_loader) if hasattr(forget_loader, "__len__") else 0  # type: ignore[arg-type]
    if length <= LONG_PASS:
        return None
    return -(-length // CHECKS_PER_LONG_PASS)
