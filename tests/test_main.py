"""The ``python -m monai_unlearn`` front door."""

from __future__ import annotations

import contextlib
import io
import json
import os

from monai_unlearn.__main__ import find_train_config, main
from tests.bundle_fixtures import tree_digest
from tests.test_bundle_unlearn import BundleCase


class TestFrontDoor(BundleCase):
    def test_unlearn_command(self):
        out = self.out("front_door")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            main(["unlearn", "--bundle", self.template, "--forget", "label=1", "--output", out, "--eps", "0.3",
                  "--epochs", "5", "--lr", "0.01", "--reason", "class 1 retired", "--quiet", "--regime", "fixed",
                  "--set", "unlearn_params#phi=2.0"])
        self.assertIn("forget_acc", printed.getvalue())
        report = json.load(open(os.path.join(out, "unlearning", "report.json")))
        self.assertEqual(report["config"]["eps"], 0.3)
        self.assertEqual(report["config"]["phi"], 2.0)
        self.assertEqual(report["epochs"], 5)
        self.assertLess(report["after"]["forget"]["accuracy"], report["before"]["forget"]["accuracy"])
        self.assertEqual(json.load(open(os.path.join(out, "unlearning", "audit.json")))["reason"], "class 1 retired")
        self.assertEqual(tree_digest(self.template), self.template_digest)

    def test_interrupted_bundle_run_resumes(self):
        from unittest import mock

        from ignite.handlers import DiskSaver

        out = self.out("resumed")
        args = ["unlearn", "--bundle", self.zoo, "--forget", "label=1", "--output", out, "--eps", "0.3",
                "--epochs", "3", "--lr", "0.01", "--quiet", "--checkpoint-every", "1", "--regime", "fixed"]

        save = DiskSaver.__call__

        def save_then_die(saver, *a, **k):
            save(saver, *a, **k)
            raise KeyboardInterrupt  # the process is stopped right after the first pass's checkpoint

        with mock.patch.object(DiskSaver, "__call__", save_then_die):
            with self.assertRaises(KeyboardInterrupt):
                main(args)
        self.assertFalse(os.path.exists(out))  # nothing half-written
        self.assertTrue(os.path.isdir(out + ".checkpoint"))
        with contextlib.redirect_stdout(io.StringIO()):
            main(args + ["--resume"])
        report = json.load(open(os.path.join(out, "unlearning", "report.json")))
        self.assertEqual(report["epochs"], 3)
        self.assertEqual(len(report["history"]), 3)
        self.assertFalse(os.path.exists(out + ".checkpoint"))

    def test_verify_recomputes_the_evidence_and_catches_tampering(self):
        out = self.out("to_verify")
        with contextlib.redirect_stdout(io.StringIO()):
            main(["unlearn", "--bundle", self.zoo, "--forget", "device=scanner_b", "--output", out, "--eps", "0.3",
                  "--epochs", "2", "--lr", "0.01", "--quiet"])
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            main(["verify", "--unlearned", out])
        self.assertIn("verified", printed.getvalue())
        self.assertNotIn("FAIL", printed.getvalue())
        self.assertIn("ok   after forget accuracy", printed.getvalue())
        markdown = open(os.path.join(out, "unlearning", "report.md")).read()
        self.assertIn(f"python -m monai_unlearn verify --unlearned {out}", markdown)
        # a report that claims more forgetting than the weights show is caught
        path = os.path.join(out, "unlearning", "report.json")
        record = json.load(open(path))
        record["after"]["forget"]["accuracy"] = 0.0 if record["after"]["forget"]["accuracy"] > 0 else 0.5
        json.dump(record, open(path, "w"))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), self.assertRaises(SystemExit):
            main(["verify", "--unlearned", out])
        self.assertIn("FAIL after forget accuracy", printed.getvalue())

    def test_missing_train_config(self):
        with self.assertRaisesRegex(FileNotFoundError, "train.json"):
            find_train_config(os.path.join(self.tmp, "data"))
        self.assertTrue(find_train_config(self.zoo).endswith("train.json"))

    def test_bad_set(self):
        with self.assertRaises(SystemExit):
            main(["unlearn", "--bundle", self.zoo, "--forget", "label=1", "--output", self.out("y"), "--set", "oops"])


class TestComposeCommand(BundleCase):
    def test_compose_two_unlearned_bundles(self):
        import torch

        runs = []
        for name, eps in (("keep", 0.05), ("forget", 0.4)):
            out = self.out(f"compose_{name}")
            main(["unlearn", "--bundle", self.zoo, "--forget", "label=0", "--output", out, "--eps", str(eps),
                  "--epochs", "2", "--lr", "0.01", "--quiet"])
            runs.append(out)
        composed = self.out("composed")
        with contextlib.redirect_stdout(io.StringIO()):
            main(["compose", "--features", runs[0], "--head", runs[1], "--output", composed])
        weights = {r: torch.load(os.path.join(r, "models", "model.pt"), weights_only=True) for r in (*runs, composed)}
        for name, value in weights[composed].items():
            source = runs[1] if name.startswith("final.") else runs[0]
            self.assertTrue(torch.equal(value, weights[source][name]), name)
        record = json.load(open(os.path.join(composed, "unlearning", "composition.json")))
        self.assertEqual(record["head_prefixes"], ["final."])
        meta = json.load(open(os.path.join(composed, "configs", "metadata.json")))
        self.assertIn("composed", meta["changelog"][meta["version"]])
        ts = torch.jit.load(os.path.join(composed, "models", "model.ts"))
        self.assertEqual(tuple(ts(torch.rand(2, 1, 16, 16)).shape), (2, 3))
