"""Distributed unlearning on 2 CPU processes (gloo) equals a single-process run on the same data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import unittest

import torch
from torch.utils.data import DataLoader, TensorDataset

from monai_unlearn import unlearn
from monai_unlearn.metrics import collect_outputs
from tests.distributed_unlearn_script import CONFIG, PER_RANK_BATCH, data, model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestDistributed(unittest.TestCase):
    def test_two_processes_equal_one(self):
        with tempfile.TemporaryDirectory() as folder:
            out = os.path.join(folder, "rank0.pt")
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                   "--master_port", str(free_port()), os.path.join(REPO, "tests", "distributed_unlearn_script.py"), out]
            env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
            saved = torch.load(out, weights_only=True)
        # one process with twice the batch sees, step by step, the union of what the two ranks saw
        forget, remain = data()
        torch.set_num_threads(1)
        single, result = unlearn(model(), DataLoader(forget, 2 * PER_RANK_BATCH), DataLoader(remain, 2 * PER_RANK_BATCH),
                                 config=CONFIG, epochs=3, lr=0.05, evaluate=False, progress=False, regime="fixed")
        for name, value in single.state_dict().items():
            self.assertTrue(torch.allclose(saved["state"][name], value, atol=1e-5), name)
        self.assertFalse(torch.allclose(single.state_dict()["3.weight"], model().state_dict()["3.weight"]))
        logits, labels = collect_outputs(single, DataLoader(TensorDataset(*remain[:31]), 8))
        self.assertEqual(saved["labels"].tolist(), labels.tolist())
        self.assertTrue(torch.allclose(saved["logits"], logits, atol=1e-5))
        for ours, theirs in zip(saved["history"], result.history):
            self.assertAlmostEqual(ours["loss"], theirs["loss"], places=4)


if __name__ == "__main__":
    unittest.main()
