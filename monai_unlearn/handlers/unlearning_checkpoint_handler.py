"""Checkpoint and resume an ``UnlearningTrainer`` run, through ignite's ``Checkpoint`` and ``DiskSaver``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import

from monai_unlearn.checkpoint import CHECKPOINT_PREFIX, FORMAT, load_checkpoint, loader_generator, state_dict_sha256

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
Checkpoint, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Checkpoint")
DiskSaver, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "DiskSaver")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["UnlearningCheckpointHandler"]


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, torch.nn.parallel.DistributedDataParallel) else module


class UnlearningCheckpointHandler:
    """Writes a checkpoint every ``save_interval`` passes and resumes an interrupted run to the same result.

    ignite's ``Checkpoint`` with a ``DiskSaver`` (atomic writes, the last two files kept, rank 0 only under
    ``torch.distributed``) saves the network, the optimizer and the run state that a bit-identical resume needs:
    passes and iterations done, the unlearner's step count, the boundary search's noise generator, the global
    torch RNG, the shuffling generators of the forget and remain loaders, the ``UnlearningHistoryHandler``'s
    record, and a hash of the original model and the PSG parameters (a checkpoint of another run is refused).
    A checkpoint is also written after the last pass and when another handler terminates the run.

    With ``resume=True`` the latest checkpoint in ``checkpoint_dir`` (if any) is loaded at ``Events.STARTED``:
    attach this handler after handlers that evaluate the original model at the start. Random MONAI transforms
    keep their own generators, which are not restored.

    Args:
        checkpoint_dir: the folder of the checkpoint files.
        save_interval: passes between checkpoints.
        resume: continue from the latest checkpoint in ``checkpoint_dir``.
        history: the run's ``UnlearningHistoryHandler``, whose record is saved and restored.
        network: the module whose weights are saved; ``None`` uses ``engine.network`` (unwrapped from DDP).
        stop_handler: a handler with ``state_dict`` / ``load_state_dict`` whose state a resumed run needs (the run's
            ``CalibratedStopHandler``: its best state and checks), saved with the run state.
        name: logger name; ``None`` uses the engine's logger.

    Raises:
        ValueError: when ``save_interval < 1``; at resume, when the checkpoint was made from another original
            model or with other PSG parameters, or cannot be read.
    """

    def __init__(
        self,
        checkpoint_dir: str,
        save_interval: int = 1,
        resume: bool = False,
        history: Any = None,
        network: torch.nn.Module | None = None,
        stop_handler: Any = None,
        name: str | None = None,
    ) -> None:
        if int(save_interval) != save_interval or save_interval < 1:
            raise ValueError(f"checkpoint_every must be at least 1, got {save_interval}.")
        self.checkpoint_dir = str(checkpoint_dir)
        self.save_interval = int(save_interval)
        self.resume = resume
        self.history = history
        self.network = network
        self.stop_handler = stop_handler
        self.logger = logging.getLogger(name) if name is not None else None
        self.engine: Any = None
        self.checkpointer: Any = None
        self._original_sha: str | None = None

    def attach(self, engine: Engine) -> None:
        """Register saving (and resuming) on ``engine``; attaching twice to one engine is a no-op."""
        if self.logger is None:
            self.logger = engine.logger
        if engine.has_event_handler(self._maybe_save, Events.EPOCH_COMPLETED):
            return
        self.engine = engine
        network = self.network if self.network is not None else _unwrap(engine.network)
        self._original_sha = state_dict_sha256(engine.reference)
        self.checkpointer = Checkpoint(
            {"network": network, "optimizer": engine.optimizer, "run": self},
            DiskSaver(self.checkpoint_dir, create_dir=True, require_empty=False, atomic=True),
            filename_prefix=CHECKPOINT_PREFIX,
            n_saved=2,  # ignite removes the oldest file before writing the new one: keep one to fall back on
            global_step_transform=lambda e, _: e.state.epoch,
            include_self=True,
        )
        if self.resume:
            engine.add_event_handler(Events.STARTED, self._load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._maybe_save)

    def _generators(self) -> dict[str, torch.Generator | None]:
        return {"forget": loader_generator(self.engine.data_loader),
                "remain": loader_generator(self.engine.remain_data_loader)}

    def state_dict(self) -> dict[str, Any]:
        """The run state beside the weights and the optimizer (``Checkpoint`` calls this)."""
        engine = self.engine
        unlearner = engine.unlearner
        return {
            "format": FORMAT,
            "passes": engine.state.epoch,
            "engine_iteration": engine.state.iteration,
            "iteration": unlearner.iteration,
            "search_generator": unlearner.search.generator_state(),
            "torch_rng": torch.get_rng_state(),
            "loader_generators": {k: (g.get_state() if g is not None else None) for k, g in self._generators().items()},
            "history": None if self.history is None else self.history.state_dict(),
            "stop_handler": None if self.stop_handler is None else self.stop_handler.state_dict(),
            "reference_sha256": self._original_sha,
            "config": engine.unlearner.config.to_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the run state of a checkpoint (``Checkpoint.load_objects`` calls this)."""
        engine = self.engine
        if state["reference_sha256"] != self._original_sha:
            raise ValueError(f"the checkpoint in {self.checkpoint_dir} was made from another original model; "
                             "start a new run or point checkpoint_dir elsewhere.")
        if state["config"] != engine.unlearner.config.to_dict():
            raise ValueError(f"the checkpoint in {self.checkpoint_dir} used other PSG parameters: {state['config']}.")
        engine.state.epoch = int(state["passes"])
        engine.state.iteration = int(state["engine_iteration"])
        engine.unlearner.iteration = int(state["iteration"])
        engine.unlearner.search.restore_generator_state(state["search_generator"], engine.state.device)
        torch.set_rng_state(state["torch_rng"])
        for name, generator in self._generators().items():
            if generator is not None and state["loader_generators"].get(name) is not None:
                generator.set_state(state["loader_generators"][name])
        if self.history is not None and state["history"] is not None:
            self.history.load_state_dict(state["history"])
        if self.stop_handler is not None and state.get("stop_handler") is not None:
            self.stop_handler.load_state_dict(state["stop_handler"])
        engine._checked = True  # the first batches were checked by the interrupted run

    def _load(self, engine: Engine) -> None:
        saved = load_checkpoint(self.checkpoint_dir)
        if saved is None:
            self.logger.info(f"UnlearningCheckpointHandler: no checkpoint in {self.checkpoint_dir}; starting afresh.")
            return
        # the run state first: it refuses a checkpoint of another model before any weights are loaded
        self.load_state_dict(saved["run"])
        Checkpoint.load_objects({"network": self.checkpointer.to_save["network"],
                                 "optimizer": self.checkpointer.to_save["optimizer"]}, saved)
        self.checkpointer.load_state_dict(saved["checkpointer"])
        self.logger.info(f"resuming from pass {engine.state.epoch} of {engine.state.max_epochs} ({self.checkpoint_dir})")

    def _maybe_save(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        if epoch % self.save_interval == 0 or epoch >= engine.state.max_epochs or engine.should_terminate:
            self.checkpointer(engine)
