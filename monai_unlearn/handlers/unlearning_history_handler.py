"""Per-pass record of an unlearning run: mean losses, boundary flip rate, step time, and the checks on them."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["UnlearningHistoryHandler", "PASS_KEYS"]

#: the iteration outputs averaged over each pass.
PASS_KEYS = ("loss", "forget_loss", "remain_loss", "flip_rate")


def _output_dict(output: Any) -> Mapping[str, Any]:
    """The iteration output as one mapping (the first item's when MONAI decollated it into a list)."""
    if isinstance(output, Sequence) and output and isinstance(output[0], Mapping):
        return output[0]
    return output if isinstance(output, Mapping) else {}


class UnlearningHistoryHandler:
    """Keeps the per-pass history of an ``UnlearningTrainer`` run and stops it when the numbers go wrong.

    Over each epoch it sums the iteration outputs ``loss``, ``forget_loss``, ``remain_loss`` and ``flip_rate``
    on the device (no host read inside an iteration; read at ``IterationEvents.LOSS_COMPLETED`` on engines that
    fire it, before MONAI decollates the output) and times the epoch's steps. At ``EPOCH_COMPLETED`` it
    appends ``{"epoch", "loss", "forget_loss", "remain_loss", "flip_rate"}`` (pass means) to
    ``engine.state.pass_history`` (other handlers may add keys to the epoch's record, as ``ForgetScoreHandler``
    does) and logs one line. Under ``torch.distributed`` the means are averaged over ranks.

    Attach it **first** among the epoch-end handlers, so the step time excludes evaluations run at the same event.

    It raises, stopping the run before anything is written, when a pass saw non-finite input images
    (``nonfinite_input`` in the output) or a non-finite mean loss; it warns when the first pass crossed no
    decision boundary (flip rate 0).

    Attributes:
        history: the records (the same list as ``engine.state.pass_history``).
        elapsed_s: total wall time of the steps (evaluations at epoch end excluded).

    Args:
        name: logger name; ``None`` uses the engine's logger.
    """

    def __init__(self, name: str | None = None) -> None:
        self.logger = logging.getLogger(name) if name is not None else None
        self.history: list[dict[str, Any]] = []
        self.elapsed_s = 0.0
        self._sums: dict[str, torch.Tensor] = {}
        self._count = 0
        self._nonfinite: torch.Tensor | None = None
        self._start = 0.0

    def attach(self, engine: Engine) -> None:
        """Register on ``engine``; attaching twice to one engine is a no-op."""
        if self.logger is None:
            self.logger = engine.logger
        if engine.has_event_handler(self._start_pass, Events.EPOCH_STARTED):
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._start_pass)
        fires_loss = IterationEvents.LOSS_COMPLETED in getattr(engine, "_allowed_events", ())
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED if fires_loss else Events.ITERATION_COMPLETED,
                                 self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def state_dict(self) -> dict[str, Any]:
        """The history and step time so far (for checkpoints)."""
        return {"history": [dict(record) for record in self.history], "elapsed_s": self.elapsed_s}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a ``state_dict`` (a resumed run)."""
        self.history[:] = [dict(record) for record in state["history"]]
        self.elapsed_s = float(state["elapsed_s"])

    def _started(self, engine: Engine) -> None:
        engine.state.pass_history = self.history

    def _start_pass(self, engine: Engine) -> None:
        self._sums, self._count, self._nonfinite = {}, 0, None
        self._start = time.perf_counter()

    def _accumulate(self, engine: Engine) -> None:
        output = _output_dict(engine.state.output)
        for key in PASS_KEYS:
            if key in output:
                self._sums[key] = self._sums.get(key, 0.0) + output[key]
        flag = output.get("nonfinite_input")
        if flag is not None:
            self._nonfinite = flag if self._nonfinite is None else self._nonfinite | flag
        self._count += 1

    def __call__(self, engine: Engine) -> None:
        """Close the epoch: time, pass means, checks, record and log line."""
        device = getattr(engine.state, "device", None)
        if isinstance(device, torch.device) and device.type == "cuda":
            torch.cuda.synchronize(device)
        self.elapsed_s += time.perf_counter() - self._start
        if self._count == 0:
            raise ValueError("the forget loader yielded no batches: there is nothing to unlearn.")
        sums, count = self._sums, self._count
        nonfinite = self._nonfinite if self._nonfinite is not None else torch.zeros((), dtype=torch.bool)
        if torch.distributed.is_available() and torch.distributed.is_initialized() and sums:
            # pass means over all ranks, and any rank's non-finite input stops every rank
            stacked = torch.stack([torch.as_tensor(sums[k], dtype=torch.float32) / count for k in sums])
            stacked = stacked.to(device) if isinstance(device, torch.device) else stacked
            torch.distributed.all_reduce(stacked)
            sums = dict(zip(sums, stacked / torch.distributed.get_world_size()))
            flag = nonfinite.to(stacked.device, torch.float32)
            torch.distributed.all_reduce(flag)
            nonfinite, count = flag > 0, 1
        epoch = engine.state.epoch
        record = {"epoch": epoch, **{k: float(v) / count for k, v in sums.items()}}
        self.history.append(record)
        engine.state.pass_history = self.history
        if bool(nonfinite):
            raise ValueError(
                f"images with NaN or infinite values reached unlearning in pass {epoch}; fix or drop them. "
                "Nothing was written."
            )
        if "loss" in record and not math.isfinite(record["loss"]):
            raise FloatingPointError(
                f"unlearning diverged: the loss became {record['loss']} in pass {epoch}. Lower the learning "
                "rate (or phi); nothing was written."
            )
        logger = self.logger if self.logger is not None else engine.logger
        if epoch == 1 and record.get("flip_rate") == 0.0:
            logger.warning(
                "the boundary search crossed no decision boundary in the first pass (flip rate 0): the forget "
                "targets equal the true labels and nothing will be forgotten. Increase eps or num_steps."
            )
        text = " ".join(f"{k}: {v:.4f}" for k, v in record.items() if k != "epoch")
        logger.info(f"Unlearning pass {epoch}/{engine.state.max_epochs}: {text}")
