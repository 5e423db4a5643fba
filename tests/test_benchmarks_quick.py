"""Each benchmark's ``--quick`` mode runs end to end in a subprocess and writes its record (needs FashionMNIST)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from parameterized import parameterized

ROOT = Path(__file__).resolve().parents[1]


class TestBenchmarksQuick(unittest.TestCase):
    @parameterized.expand(
        [
            ("fashion_mnist_protocol.py", "quick.json"),
            ("cost.py", "cost_quick.json"),
            ("tradeoff.py", "tradeoff_quick.json"),
        ]
    )
    def test_quick_mode(self, script, record):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--out", tmp]
            if script != "cost.py":
                cmd += ["--cache", str(Path(tmp) / "cache")]
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
            data = json.loads((Path(tmp) / record).read_text())
            self.assertIn("machine", data)
            if script == "fashion_mnist_protocol.py":
                methods = [r["method"] for r in data["rows"]]
                self.assertEqual(methods[:2], ["Original", "Retrain"])
                for name in ("Fine-tune", "NegGrad+", "CF-k", "EU-k", "SCRUB", "Boundary Shrink", "PSG"):
                    self.assertIn(name, methods)
                # a second run reuses the cached models
                proc = subprocess.run(cmd + ["--methods", "retrain"], cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
                self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
                self.assertTrue(json.loads((Path(tmp) / record).read_text())["retrained_cached"])
            elif script == "cost.py":
                names = [r["variant"] for r in data["iteration_rows"]]
                self.assertEqual(names[0], "plain step")
                self.assertIn("PSG T=1", names)
                self.assertTrue(all(r["ratio"] > 0 for r in data["iteration_rows"]))
            else:
                self.assertEqual(len(data["points"]), 2)
                for png in data["plots"]:
                    self.assertTrue(Path(png).is_file())


if __name__ == "__main__":
    unittest.main()
