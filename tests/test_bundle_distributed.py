"""The multi_gpu_unlearn overlay under torchrun (2 CPU processes, gloo) equals a single-process bundle run."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

import torch

from tests.bundle_fixtures import UNLEARN_CONFIG, make_images, tree_digest, write_json_zoo_bundle

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MULTI_GPU_CONFIG = os.path.join(os.path.dirname(UNLEARN_CONFIG), "multi_gpu_unlearn.json")
PER_RANK_BATCH = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestBundleDistributed(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(1)
        cls.tmp = tempfile.mkdtemp()
        cls.bundle = write_json_zoo_bundle(os.path.join(cls.tmp, "zoo"), make_images(os.path.join(cls.tmp, "data")))
        cls.digest = tree_digest(cls.bundle)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_bundle(self, out: str, batch_size: int, processes: int) -> subprocess.CompletedProcess:
        configs = [f"{self.bundle}/configs/train.json", UNLEARN_CONFIG] + ([MULTI_GPU_CONFIG] if processes > 1 else [])
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                    "--master_addr", "127.0.0.1", "--master_port", str(free_port())] if processes > 1 else [sys.executable]
        # no shuffling: then a step of one process with twice the batch sees what the two ranks see together;
        # an absolute eps and a fixed value range, since "relative" and "batch" read each rank's own batch
        cmd = launcher + [
            "-m", "monai.bundle", "run", "unlearn", "--config_file", repr(configs),
            "--meta_file", f"{self.bundle}/configs/metadata.json", "--bundle_root", self.bundle,
            "--forget", "device=scanner_a", "--output_dir", out, "--unlearn_params#eps", "0.3",
            "--unlearn_params#eps_mode", "absolute", "--unlearn_params#value_range", "[0.0, 1.0]",
            "--unlearn_epochs", "2", "--unlearn_batch_size", str(batch_size), "--unlearn_shuffle", "false",
            "--unlearn_progress", "false",
        ]
        if processes == 1:  # the default under torchrun is fixed passes (the calibrated stop gives way): match it
            cmd += ["--unlearn_regime", "fixed"]
        env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=self.tmp, timeout=400)

    def test_two_processes_equal_one(self):
        two, one = os.path.join(self.tmp, "two"), os.path.join(self.tmp, "one")
        proc = self.run_bundle(two, PER_RANK_BATCH, 2)
        self.assertEqual(proc.returncode, 0, proc.stderr[-4000:])
        self.assertIn("calibrated stop is not supported under torch.distributed", proc.stderr + proc.stdout)
        proc = self.run_bundle(one, 2 * PER_RANK_BATCH, 1)
        self.assertEqual(proc.returncode, 0, proc.stderr[-4000:])
        self.assertEqual(tree_digest(self.bundle), self.digest)  # the wrapped bundle is untouched

        weights = [torch.load(os.path.join(o, "models", "model.pt"), weights_only=True) for o in (two, one)]
        original = torch.load(os.path.join(self.bundle, "models", "model.pt"), weights_only=True)
        for name, value in weights[1].items():
            self.assertTrue(torch.allclose(weights[0][name], value, atol=1e-5), name)
        self.assertFalse(all(torch.equal(original[n], v) for n, v in weights[1].items()))  # something was learned

        # every metric was computed on all the data, gathered from both ranks: the same numbers as one process
        reports = [json.load(open(os.path.join(o, "unlearning", "report.json"))) for o in (two, one)]
        for stage in ("before", "after"):
            for split in ("forget", "remain", "test"):
                self.assertEqual(reports[0][stage][split]["count"], reports[1][stage][split]["count"], (stage, split))
                self.assertAlmostEqual(reports[0][stage][split]["accuracy"], reports[1][stage][split]["accuracy"],
                                       places=6, msg=(stage, split))
            self.assertAlmostEqual(reports[0][stage]["mia"]["mean"], reports[1][stage]["mia"]["mean"], places=3)
        for ours, theirs in zip(reports[0]["history"], reports[1]["history"]):
            self.assertAlmostEqual(ours["loss"], theirs["loss"], places=4)
        self.assertEqual(reports[0]["num_forgotten"], reports[1]["num_forgotten"])
        leftovers = [n for n in os.listdir(self.tmp) if n.startswith("two") and n != "two"]
        self.assertEqual(leftovers, [])  # no second rank wrote a partial copy


if __name__ == "__main__":
    unittest.main()
