"""Run each tutorial end to end in ``--quick`` mode, as a user would, so that they cannot rot.

Each tutorial runs in its own Python process (``sys.executable tutorials/<name>.py --quick --workdir <tmp>``)
on the real offline slice data (installed by ``scripts/install_data.sh``; without them the tutorials fail with
a message naming the install command); the test checks the exit code and the files the tutorial says it
writes. About 20-35 s per tutorial on two CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import unittest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIALS = os.path.join(REPO_ROOT, "tutorials")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_tutorial(name: str, workdir: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``tutorials/<name>`` with ``--quick --workdir workdir`` from the repository root."""
    pythonpath = os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    return subprocess.run(
        [sys.executable, os.path.join(TUTORIALS, name), "--quick", "--workdir", workdir],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, env=env,
    )


class TestTutorials(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.workdir = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def assert_ran(self, proc: subprocess.CompletedProcess) -> None:
        self.assertEqual(proc.returncode, 0, msg=f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-6000:]}")

    def assert_png(self, path: str) -> None:
        self.assertTrue(os.path.isfile(path), msg=f"missing {path}")
        with open(path, "rb") as f:
            self.assertEqual(f.read(8), PNG_MAGIC, msg=f"{path} is not a PNG")

    def assert_before_after(self, report: dict) -> None:
        for when in ("before", "after"):
            self.assertIsNotNone(report.get(when), msg=f"report has no {when!r} evaluation")
            for split in ("forget", "remain", "test"):
                self.assertIn("accuracy", report[when][split])
            self.assertIsNotNone(report[when]["mia"])
        self.assertLess(report["after"]["forget"]["accuracy"], report["before"]["forget"]["accuracy"])
        self.assertGreaterEqual(report["after"]["remain"]["accuracy"], 0.9)

    def test_01_unlearning_handler_in_your_trainer(self):
        proc = run_tutorial("01_unlearning_handler_in_your_trainer.py", self.workdir)
        self.assert_ran(proc)
        out = os.path.join(self.workdir, "unlearning")
        with open(os.path.join(out, "unlearning_report.json")) as f:
            report = json.load(f)
        self.assert_before_after(report)
        self.assertEqual(report["method"], "PSG")
        self.assertEqual(report["config"]["phi"], 4.0)
        self.assertEqual(report["extra"]["forget"], "device=invesalius_cranium")
        self.assertGreater(report["iterations"], 0)
        self.assert_png(os.path.join(out, "unlearning_curves.png"))
        self.assert_png(os.path.join(out, "per_class_accuracy.png"))
        for name in ("model.pt", "model_unlearned.pt"):
            self.assertTrue(os.path.isfile(os.path.join(self.workdir, name)), msg=f"missing {name}")
        for text in ("forget_acc", "before", "after", "unlearning_report.json"):
            self.assertIn(text, proc.stdout)

    def test_02_unlearn_a_device_from_a_bundle(self):
        proc = run_tutorial("02_unlearn_a_device_from_a_bundle.py", self.workdir)
        self.assert_ran(proc)
        self.assertTrue(os.path.isfile(os.path.join(self.workdir, "slice_classifier", "models", "model.pt")))
        new = os.path.join(self.workdir, "slice_classifier_unlearned")
        for rel in ("configs/train.json", "configs/inference.json", "models/model.pt", "models/model.ts"):
            self.assertTrue(os.path.isfile(os.path.join(new, rel)), msg=f"the new bundle lacks {rel}")
        with open(os.path.join(new, "unlearning", "report.json")) as f:
            report = json.load(f)
        self.assert_before_after(report)
        self.assertEqual(report["selector"], "device=invesalius_cranium")
        with open(os.path.join(new, "unlearning", "audit.json")) as f:
            audit = json.load(f)
        self.assertEqual(audit["num_forgotten"], report["num_forgotten"])
        self.assertEqual(len(audit["items"]), report["num_forgotten"])
        self.assertEqual(audit["reason"], "scanner invesalius_cranium retired")
        self.assertEqual(list(audit["counts"]["device"]), ["invesalius_cranium"])
        self.assert_png(os.path.join(new, "unlearning", "curves.png"))
        self.assert_png(os.path.join(new, "unlearning", "per_class_accuracy.png"))
        with open(os.path.join(new, "configs", "metadata.json")) as f:
            meta = json.load(f)
        self.assertEqual(meta["version"], "0.1.1")
        self.assertIn("unlearned with PSG", meta["changelog"]["0.1.1"])
        self.assertIn("in the audit (path and content hash)? True", proc.stdout)
        self.assertIn("unlearned ", proc.stdout)  # the TorchScript model's probabilities on a forgotten slice


    def test_04_compose_two_unlearning_runs(self):
        with tempfile.TemporaryDirectory() as workdir:
            proc = run_tutorial("04_compose_two_unlearning_runs.py", workdir)
            self.assert_ran(proc)
            self.assertIn("verified", proc.stdout)
            self.assertNotIn("FAIL", proc.stdout)
            self.assertIn("composed + head refit", proc.stdout)
            composed = os.path.join(workdir, "composed")
            for part in ("models/model.pt", "models/model.ts", "unlearning/composition.json", "configs/metadata.json"):
                self.assertTrue(os.path.isfile(os.path.join(composed, part)), part)

if __name__ == "__main__":
    unittest.main()
