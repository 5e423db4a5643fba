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
                for name in ("Fine-tune", "NegGrad+", "CF-k", "EU-k", "SCRUB", "Boundary Shrink",
                             "PSG (T=1, phi 4, 1 pass)", "PSG (T=2, gamma 0.5, lambda 0.1, phi 1, 5 passes)"):
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


class TestSelectiveQuick(unittest.TestCase):
    def test_selective_rows(self):
        """The selective variant adds the row that stops at the original's held-out accuracy on the class."""
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            cmd = [sys.executable, str(ROOT / "benchmarks" / "fashion_mnist_protocol.py"), "--quick", "--out", tmp,
                   "--cache", str(Path(tmp) / "cache"), "--selective", "0.5", "--tag", "sel", "--threads", "1",
                   "--methods", "retrain,psg,psg_heldout_stop"]
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
            rows = json.loads((Path(tmp) / "sel.json").read_text())["rows"]
            stopped = rows[-1]
            self.assertEqual(stopped["method"], "PSG (T=1, phi 4, lr 1e-4, stop at held-out accuracy)")
            self.assertEqual(stopped["params"]["stop_at_forget_accuracy"], rows[0]["test_forget_class_acc"])


class TestRegimeDigitsQuick(unittest.TestCase):
    def test_fixed_passes_and_regime_rows(self):
        import contextlib
        import importlib.util
        import io

        spec = importlib.util.spec_from_file_location("regime_digits", ROOT / "benchmarks" / "regime_digits.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            rows = module.main(["--quick", "--threads", "1"])
        self.assertEqual([(r["request"], r["method"]) for r in rows], [
            ("class 3 withdrawn", "fixed passes"), ("class 3 withdrawn", "regime auto"),
            ("random 20 % of class 3", "fixed passes"), ("random 20 % of class 3", "regime auto")])
        self.assertEqual(rows[1]["target"], 0.0)  # the withdrawn class's target needs no retrained model
        self.assertGreater(rows[3]["target"], 0.0)  # the partial one is the held-out accuracy of the class
        self.assertIn("| random 20 % of class 3 | regime auto |", printed.getvalue())

    def test_package_default_per_withdrawn_weight(self):
        import contextlib
        import importlib.util
        import io
        import math

        spec = importlib.util.spec_from_file_location("regime_digits", ROOT / "benchmarks" / "regime_digits.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            rows = module.main(["--quick", "--threads", "1", "--withdrawn-weights", "0,3"])
        self.assertEqual([r["method"] for r in rows], ["withdrawn_weight 0", "withdrawn_weight 3"])
        for row in rows:
            self.assertTrue(math.isfinite(row["average_gap"]))
            self.assertEqual(row["retrained"]["forget"], 0.0)  # retrained without the class: it is never predicted
        self.assertIn("| class 3 withdrawn, package default | withdrawn_weight 3 |", printed.getvalue())


class TestDeviceForgettingQuick(unittest.TestCase):
    def test_device_forgetting_quick(self):
        """Both tasks (slices, brain) in quick mode: one row per method, finite numbers (needs the volume data)."""
        import math

        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            cmd = [sys.executable, str(ROOT / "benchmarks" / "device_forgetting.py"), "--quick", "--out", tmp,
                   "--cache", str(Path(tmp) / "cache"), "--threads", "1"]  # 2 threads on a busy 2-core CPU ran 8x slower
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
            for task in ("slices", "brain"):
                data = json.loads((Path(tmp) / f"device_{task}_quick.json").read_text())
                self.assertTrue((Path(tmp) / f"device_{task}_quick.md").is_file())
                self.assertIn("machine", data)
                methods = [r["method"] for r in data["rows"]]
                self.assertEqual(methods, ["Original", "Retrain", "Fine-tune", "NegGrad+", "CF-k", "EU-k", "SCRUB",
                                           "Boundary Shrink", "PSG"])
                for row in data["rows"]:
                    for key in ("forget_acc", "remain_acc", "test_acc", "test_forget_device_acc", "mia", "mia_std",
                                "mia_eff_entropy", "gap", "time_s"):
                        self.assertTrue(math.isfinite(row[key]), (task, row["method"], key, row[key]))
                self.assertIn("mia_device", data["rows"][0])
                self.assertGreater(data["settings"]["n_test_forget_device"], 0)
            slices = json.loads((Path(tmp) / "device_slices_quick.json").read_text())
            self.assertEqual(slices["settings"]["forget_device"], "pyradiomics_lung2")
            self.assertIn("pyradiomics_lung1", slices["settings"]["other_sources_of_class"])


if __name__ == "__main__":
    unittest.main()


class TestScenariosQuick(unittest.TestCase):
    def test_every_scenario_and_method_scored_against_retraining(self):
        """The scenario benchmark in quick mode: 8 scenarios, every registry method on the classification ones, the
        regime the default chose, and a gap of 0 for the retrained model itself (needs the offline data sets)."""
        from monai_unlearn.baselines import METHODS

        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            cmd = [sys.executable, str(ROOT / "benchmarks" / "scenarios.py"), "--quick", "--out", tmp,
                   "--cache", str(Path(tmp) / "cache"), "--threads", "1"]
            proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
            self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
            data = json.loads((Path(tmp) / "scenarios_quick.json").read_text())
            self.assertTrue((Path(tmp) / "scenarios_quick.png").stat().st_size > 0)
            report = (Path(tmp) / "scenarios_quick.md").read_text()
            self.assertIn("### FashionMNIST: class 0 withdrawn", report)
            # the verdict table: one row per scenario with the default's regime, gap, remain and time
            verdict = report.split("## The default against the issue's targets")[1].split("###")[0]
            verdict_rows = [line for line in verdict.splitlines()
                            if line.startswith("| ") and "regime chosen" not in line]
            self.assertEqual(len(verdict_rows), 8, verdict)
            # every row ends with the noise floor: another retraining's gap to the retrained model
            self.assertTrue(all(not row.rstrip().endswith("| - |") for row in verdict_rows), verdict)
        runs = {r["scenario"]: r for r in data["runs"]}
        self.assertEqual(len(runs), 8)
        # the registry's "psg" is run twice: the previous fixed-pass default and the shipped default
        classifiers = (set(METHODS) - {"psg"}) | {"original", "psg_fixed", "psg_default", "retrain_seed"}
        expected_regime = {"fmnist_class0": "class", "fmnist_class0_10pct": "partial", "fmnist_all_10pct": "partial",
                           "slices_lung2": "partial", "slices_cranium": "class", "brain_mni152": "partial",
                           "seg_white_matter": "segmentation_class", "seg_scanner_b": "segmentation_cases"}
        for name, run in runs.items():
            rows = run["rows"]
            want = classifiers if not name.startswith("seg") else {"original", "retrain", "finetune", "psg_fixed",
                                                                     "psg_default", "retrain_seed"}
            self.assertEqual(set(rows), want, name)
            self.assertEqual(rows["retrain"]["gap"], 0.0)
            self.assertEqual(rows["psg_default"]["regime"], expected_regime[name], name)
            for row in rows.values():
                self.assertGreaterEqual(row["gap"], 0.0)
                self.assertGreater(row["time_frac"], 0.0)
        self.assertEqual(set(data["summary"]), set(runs))


def scenarios_module():
    """``benchmarks/scenarios.py`` as a module (the benchmarks are scripts, not a package)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import scenarios
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return scenarios


class TestScenarioMerge(unittest.TestCase):
    def test_later_rows_replace_earlier_ones_unless_a_model_differs(self):
        merge_runs = scenarios_module().merge_runs

        def run(scenario, seed, original, trained_in=10.0, **rows):
            return {"scenario": scenario, "seed": seed,
                    "rows": {"original": {"forget": original, "time_s": trained_in}, "retrain": {"forget": 0.0}, **rows}}

        first = {"runs": [run("slices_lung2", 0, 0.9, salun={"gap": 0.5}, psg_default={"gap": 0.2}),
                          run("fmnist_class0", 0, 0.9, salun={"gap": 0.1})]}
        # the same original model (loaded from a cache: another training time, the same scores): rows merged;
        # another original (other scores): the later run replaces the earlier one whole
        later = {"runs": [run("slices_lung2", 0, 0.9, trained_in=12.0, psg_default={"gap": 0.1}),
                          run("fmnist_class0", 0, 0.8, psg_default={"gap": 0.3})]}
        merged = merge_runs([first, later])
        self.assertEqual([(r["scenario"], r["seed"]) for r in merged], [("fmnist_class0", 0), ("slices_lung2", 0)])
        self.assertEqual(merged[1]["rows"]["salun"], {"gap": 0.5})
        self.assertEqual(merged[1]["rows"]["psg_default"], {"gap": 0.1})
        self.assertEqual(set(merged[0]["rows"]), {"original", "retrain", "psg_default"})  # SalUn's earlier row dropped
        self.assertEqual(first["runs"][0]["rows"]["psg_default"], {"gap": 0.2})  # the inputs are not changed
        # another retrained model (its gaps are to another reference): replaced whole too
        other = run("slices_lung2", 0, 0.9, psg_default={"gap": 0.4})
        other["rows"]["retrain"]["forget"] = 0.1
        merged = merge_runs([first, {"runs": [other]}])
        self.assertEqual(set(merged[1]["rows"]), {"original", "retrain", "psg_default"})


class TestDefaultOverrides(unittest.TestCase):
    def test_psg_fields_go_over_the_package_default(self):
        from monai_unlearn import PSGConfig

        scenarios = scenarios_module()
        overrides = scenarios.unlearn_overrides({"psg": {"phi": 1.0}, "lr": 0.003})
        self.assertEqual(overrides["lr"], 0.003)
        self.assertEqual(overrides["config"], PSGConfig.package_default(phi=1.0))
        self.assertNotEqual(overrides["config"], PSGConfig.package_default())
        self.assertEqual(scenarios.unlearn_overrides(None), {})
        self.assertEqual(scenarios.unlearn_overrides({"lr": 0.01}), {"lr": 0.01})


class TestScenarioVerdict(unittest.TestCase):
    def test_another_retraining_is_a_reference_not_a_method(self):
        """The second retraining is reported as the noise floor and never as the lowest method."""
        scenarios = scenarios_module()
        markdown, summarise, verdict = scenarios.markdown, scenarios.summarise, scenarios.verdict

        def row(gap, remain=0.9):
            return {"forget": 0.0, "remain": remain, "test": 0.8, "mia": 0.9, "gap": gap, "time_frac": 0.5}

        runs = [{"scenario": "fmnist_class0", "seed": seed, "note": "n",
                 "rows": {"original": row(0.3), "retrain": row(0.0), "retrain_seed": row(0.01 + seed / 100),
                          "salun": row(0.05), "psg_default": {**row(0.04), "regime": "class"}}} for seed in range(2)]
        summary = summarise(runs)
        line = [x for x in verdict(summary, runs).splitlines() if x.startswith("| FashionMNIST")][0]
        self.assertIn("SalUn 0.050", line)  # the lowest other method, not the reference
        self.assertIn("(lowest)", line)
        self.assertTrue(line.endswith("| 0.015 ± 0.007 (default above it) |"), line)
        table = markdown(summary, runs)
        self.assertIn("| Retrain (another seed) | 0.015 ± 0.007 |", table)  # listed, not bold
        self.assertIn("| PSG (default) | **0.040 ± 0.000** |", table)
        # a run of the references alone (the noise floor measured by itself) renders too, with nothing in bold
        alone = [{**run, "rows": {k: v for k, v in run["rows"].items() if k in ("original", "retrain", "retrain_seed")}}
                 for run in runs]
        self.assertNotIn("**", markdown(summarise(alone), alone))
