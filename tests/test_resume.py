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

import monai_unlearn.runner as runner
from monai_unlearn import PSGConfig, unlearn
from monai_unlearn.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from tests.test_boundary_search import tiny_classifier

CONFIG = PSGConfig(eps=0.3, num_steps=2, gamma=0.5, lam=0.1, lambda_schedule="linear", phi=1.0, seed=4)


class Killed(Exception):
    """Stands for the process being killed right after a checkpoint was written."""


def loaders(seed: int = 0):
    torch.manual_seed(seed)
    x, y = torch.rand(40, 1, 4, 4), torch.randint(0, 3, (40,))
    forget = DataLoader(TensorDataset(x[:12], y[:12]), 4, shuffle=True, generator=torch.Generator().manual_seed(1))
    remain = DataLoader(TensorDataset(x[12:], y[12:]), 4, shuffle=True)  # shuffles with the global generator
    return forget, remain


def run(checkpoint_dir=None, resume=False, model=None):
    forget, remain = loaders()
    torch.manual_seed(123)
    return unlearn(model or tiny_classifier(), forget, remain, config=CONFIG, epochs=4, lr=0.05, evaluate=False,
                   progress=False, checkpoint_dir=checkpoint_dir, resume=resume)


class TestResume(unittest.TestCase):
    def setUp(self):
        torch.set_num_threads(1)

    def test_killed_run_resumes_to_the_same_weights(self):
        expected, expected_result = run()
        with tempfile.TemporaryDirectory() as folder:
            calls = {"n": 0}

            def save_then_die(*args, **kwargs):
                path = save_checkpoint(*args, **kwargs)
                calls["n"] += 1
                if calls["n"] == 2:
                    raise Killed()
                return path

            with mock.patch.object(runner, "save_checkpoint", side_effect=save_then_die):
                with self.assertRaises(Killed):
                    run(folder)
            self.assertEqual(load_checkpoint(folder)["passes"], 2)
            # a new process: fresh model object, global RNG somewhere else entirely
            torch.manual_seed(999)
            resumed, result = run(folder, resume=True)
        for name, value in expected.state_dict().items():
            self.assertTrue(torch.equal(value, resumed.state_dict()[name]), name)
        self.assertEqual(result.iterations, expected_result.iterations)
        self.assertEqual([h["loss"] for h in result.history], [h["loss"] for h in expected_result.history])

    def test_process_killed_with_sigkill_resumes(self):
        # a real kill: the child process SIGKILLs itself right after its second checkpoint (no cleanup runs)
        expected, _ = run()
        child = (
            "import os, signal, sys\n"
            "import monai_unlearn.runner as runner\n"
            "from monai_unlearn.checkpoint import save_checkpoint\n"
            "from tests.test_resume import run\n"
            "calls = []\n"
            "def save_then_die(*args, **kwargs):\n"
            "    save_checkpoint(*args, **kwargs)\n"
            "    calls.append(1)\n"
            "    if len(calls) == 2:\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "runner.save_checkpoint = save_then_die\n"
            "run(sys.argv[1])\n"
        )
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
        with tempfile.TemporaryDirectory() as folder:
            proc = subprocess.run([sys.executable, "-c", child, folder], env=env, capture_output=True, timeout=300)
            self.assertEqual(proc.returncode, -signal.SIGKILL, proc.stderr[-2000:])
            self.assertEqual(load_checkpoint(folder)["passes"], 2)
            resumed, result = run(folder, resume=True)
        self.assertEqual(result.epochs, 4)
        for name, value in expected.state_dict().items():
            self.assertTrue(torch.equal(value, resumed.state_dict()[name]), name)

    def test_resume_without_checkpoint_starts_fresh(self):
        expected, _ = run()
        with tempfile.TemporaryDirectory() as folder:
            fresh, result = run(folder, resume=True)
            self.assertTrue(os.path.isfile(os.path.join(folder, CHECKPOINT_NAME)))
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
