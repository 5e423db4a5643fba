"""A run stopped part way and resumed from its checkpoint ends where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

import torch
from torch.utils.data import DataLoader, TensorDataset

from ignite.handlers import DiskSaver

from monai_unlearn import PSGConfig, unlearn
from monai_unlearn.checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint
from tests.test_boundary_search import fit, tiny_classifier

CONFIG = PSGConfig(eps=0.3, num_steps=2, gamma=0.5, lam=0.1, lambda_schedule="linear", phi=1.0, seed=4)


class Killed(Exception):
    """Stands for the process being killed right after a checkpoint was written."""


def loaders(seed: int = 0):
    torch.manual_seed(seed)
    x, y = torch.rand(40, 1, 4, 4), torch.randint(0, 3, (40,))
    forget = DataLoader(TensorDataset(x[:12], y[:12]), 4, shuffle=True, generator=torch.Generator().manual_seed(1))
    remain = DataLoader(TensorDataset(x[12:], y[12:]), 4, shuffle=True)  # shuffles with the global generator
    return forget, remain


def run(checkpoint_dir=None, resume=False, model=None, regime="fixed", epochs=4):
    forget, remain = loaders()
    torch.manual_seed(123)
    return unlearn(model or tiny_classifier(), forget, remain, config=CONFIG, epochs=epochs, lr=0.05, evaluate=False,
                   progress=False, checkpoint_dir=checkpoint_dir, resume=resume, regime=regime)


def withdrawn_class_run(checkpoint_dir, resume=False, epochs=6):
    """The default (``regime="auto"``) on a class withdrawn from a model trained to recognise it: a run that takes
    steps and stops at its target (a partial request on data this small already meets its target within the
    target's sampling margin, and takes no step)."""
    torch.manual_seed(0)
    x, y = torch.rand(40, 1, 4, 4), torch.randint(0, 2, (40,))
    y[:12] = 2  # the forget items are the only ones of class 2
    model = fit(tiny_classifier(), x, y)
    forget = DataLoader(TensorDataset(x[:12], y[:12]), 4, shuffle=True, generator=torch.Generator().manual_seed(1))
    remain = DataLoader(TensorDataset(x[12:], y[12:]), 4, shuffle=True)
    torch.manual_seed(123)
    return unlearn(model, forget, remain, config=CONFIG, epochs=epochs, lr=0.05, evaluate=False, progress=False,
                   checkpoint_dir=checkpoint_dir, resume=resume, regime="auto")


def killed_after_checkpoint(n: int):
    """A patch under which the process "dies" (raises ``Killed``) right after writing its ``n``-th checkpoint."""
    calls = {"n": 0}
    save = DiskSaver.__call__

    def save_then_die(saver, *args, **kwargs):
        save(saver, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == n:
            raise Killed()

    return mock.patch.object(DiskSaver, "__call__", save_then_die)


class TestResume(unittest.TestCase):
    def setUp(self):
        torch.set_num_threads(1)

    def test_killed_run_resumes_to_the_same_weights(self):
        expected, expected_result = run()
        with tempfile.TemporaryDirectory() as folder:
            with killed_after_checkpoint(2):
                with self.assertRaises(Killed):
                    run(folder)
            self.assertEqual(load_checkpoint(folder)["run"]["passes"], 2)
            # a new process: fresh model object, global RNG somewhere else entirely
            torch.manual_seed(999)
            resumed, result = run(folder, resume=True)
        for name, value in expected.state_dict().items():
            self.assertTrue(torch.equal(value, resumed.state_dict()[name]), name)
        self.assertEqual(result.iterations, expected_result.iterations)
        self.assertEqual([h["loss"] for h in result.history], [h["loss"] for h in expected_result.history])

    def test_calibrated_stop_resumes_with_its_best_state_and_checks(self):
        # the default stop keeps the best state and every check: a resumed run must end where an uninterrupted one
        # does, with the same checks, stop and rewind (a regime set by hand, so that the run lasts several passes)
        expected, expected_result = run(regime="class", epochs=6)
        self.assertGreaterEqual(expected_result.epochs, 3)
        with tempfile.TemporaryDirectory() as folder:
            with killed_after_checkpoint(2):
                with self.assertRaises(Killed):
                    run(folder, regime="class", epochs=6)
            torch.manual_seed(999)
            resumed, result = run(folder, resume=True, regime="class", epochs=6)
        for name, value in expected.state_dict().items():
            self.assertTrue(torch.equal(value, resumed.state_dict()[name]), name)
        for key in ("checks", "stopped", "best_iteration", "rewound", "reached_at"):
            self.assertEqual(result.stopping[key], expected_result.stopping[key], key)

    def test_a_run_stopped_at_its_target_stays_stopped_on_resume(self):
        with tempfile.TemporaryDirectory() as folder:
            first, result = withdrawn_class_run(folder)  # the default: stops at its target within the budget
            self.assertEqual((result.stopping["regime"]["regime"], result.stopping["stopped"]), ("class", "target"))
            self.assertLess(result.epochs, 6)
            self.assertGreater(result.epochs, 0)
            again, second = withdrawn_class_run(folder, resume=True)
        self.assertEqual(second.epochs, result.epochs)
        for name, value in first.state_dict().items():
            self.assertTrue(torch.equal(value, again.state_dict()[name]), name)

    def test_process_killed_with_sigkill_resumes(self):
        # a real kill: the child process SIGKILLs itself right after its second checkpoint (no cleanup runs)
        expected, _ = run()
        child = (
            "import os, signal, sys\n"
            "from ignite.handlers import DiskSaver\n"
            "from tests.test_resume import run\n"
            "calls = []\n"
            "save = DiskSaver.__call__\n"
            "def save_then_die(saver, *args, **kwargs):\n"
            "    save(saver, *args, **kwargs)\n"
            "    calls.append(1)\n"
            "    if len(calls) == 2:\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "DiskSaver.__call__ = save_then_die\n"
            "run(sys.argv[1])\n"
        )
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
        with tempfile.TemporaryDirectory() as folder:
            proc = subprocess.run([sys.executable, "-c", child, folder], env=env, capture_output=True, timeout=300)
            self.assertEqual(proc.returncode, -signal.SIGKILL, proc.stderr[-2000:])
            self.assertEqual(load_checkpoint(folder)["run"]["passes"], 2)
            resumed, result = run(folder, resume=True)
        self.assertEqual(result.epochs, 4)
        for name, value in expected.state_dict().items():
            self.assertTrue(torch.equal(value, resumed.state_dict()[name]), name)

    def test_resume_without_checkpoint_starts_fresh(self):
        expected, _ = run()
        with tempfile.TemporaryDirectory() as folder:
            fresh, result = run(folder, resume=True)
            self.assertEqual(latest_checkpoint(folder), checkpoint_path(folder, 4))
            # ignite's Checkpoint keeps the last two passes, so a kill while writing leaves one to fall back on
            self.assertEqual(sorted(os.listdir(folder)), ["unlearning_checkpoint_3.pt", "unlearning_checkpoint_4.pt"])
        self.assertEqual(result.epochs, 4)
        for name, value in expected.state_dict().items():
            self.assertTrue(torch.equal(value, fresh.state_dict()[name]), name)

    def test_checkpoint_of_another_model_is_refused(self):
        with tempfile.TemporaryDirectory() as folder:
            run(folder)
            other = tiny_classifier(seed=7)
            with self.assertRaisesRegex(ValueError, "another original model"):
                run(folder, resume=True, model=other)

    def test_resume_needs_a_folder(self):
        with self.assertRaisesRegex(ValueError, "checkpoint_dir"):
            run(None, resume=True)


if __name__ == "__main__":
    unittest.main()
