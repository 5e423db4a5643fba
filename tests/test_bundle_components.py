"""The unlearn overlay is a config of components by id: each can be overridden, swapped or added to."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import torch
from monai.utils import optional_import
from parameterized import parameterized

from monai_unlearn.__main__ import main
from monai_unlearn.bundle import OVERLAY_CONFIG, unlearn_from_parser
from monai_unlearn.bundle.ids import overlay_ids
from monai_unlearn.core import ForgetSelectionError
from tests.bundle_fixtures import UNLEARN_CONFIG, make_images, overlay_parser, tree_digest, write_json_zoo_bundle

_, has_tensorboard = optional_import("tensorboard")
mlflow, has_mlflow = optional_import("mlflow")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = {"unlearn_epochs": 2, "forget": "label=2"}


class ComponentsCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(1)
        cls.tmp = tempfile.mkdtemp()
        cls.zoo = write_json_zoo_bundle(os.path.join(cls.tmp, "zoo"), make_images(os.path.join(cls.tmp, "data")))
        cls.digest = tree_digest(cls.zoo)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_overlay(self, name: str, **overrides):
        parser = overlay_parser(self.zoo, output_dir=os.path.join(self.tmp, "out", name), **{**QUICK, **overrides})
        summary = unlearn_from_parser(parser)
        self.assertEqual(tree_digest(self.zoo), self.digest)  # the wrapped bundle is never modified
        return parser, summary


class TestOverrideById(ComponentsCase):
    def test_the_bundle_link_is_the_packaged_overlay(self):
        self.assertEqual(os.path.realpath(UNLEARN_CONFIG), os.path.realpath(OVERLAY_CONFIG))

    def test_the_regimes_withdrawn_classes_reach_the_trainer_and_can_be_switched_off(self):
        parser, summary = self.run_overlay("withdrawn", unlearn_regime="auto")
        self.assertEqual(parser.get_parsed_content("unlearn#trainer").unlearner.withdrawn_classes, [2])
        self.assertEqual(summary["record"]["stopping"]["withdrawn_targets"], [2])
        parser, summary = self.run_overlay("paper_targets", unlearn_regime="auto",
                                           **{"unlearn#trainer#withdrawn_classes": None})
        self.assertIsNone(parser.get_parsed_content("unlearn#trainer").unlearner.withdrawn_classes)
        self.assertEqual(summary["record"]["stopping"]["withdrawn_targets"], [])

    def test_learning_rate_by_id_and_optimizer_swapped_by_one_override(self):
        parser, summary = self.run_overlay("rmsprop", **{"unlearn#optimizer#_target_": "torch.optim.RMSprop",
                                                         "unlearn#optimizer#lr": 0.0005})
        self.assertIsInstance(parser.get_parsed_content("unlearn#optimizer"), torch.optim.RMSprop)
        record = summary["record"]
        self.assertEqual(record["optimizer"]["name"], "RMSprop")
        self.assertEqual(record["optimizer"]["lr"], 0.0005)
        self.assertEqual(record["epochs"], 2)

    def test_whole_component_replaced(self):
        adam = {"_target_": "torch.optim.Adam", "params": "$@unlearn#network.parameters()", "lr": 0.0002}
        _, summary = self.run_overlay("adam", **{"unlearn#optimizer": adam})
        self.assertEqual(summary["record"]["optimizer"]["name"], "Adam")
        self.assertEqual(summary["record"]["optimizer"]["lr"], 0.0002)

    def test_a_default_handler_disabled_by_id(self):
        parser, summary = self.run_overlay("no_metrics", **{"unlearn#forget_score#_disabled_": True})
        self.assertIsNone(parser.get_parsed_content("unlearn#forget_score"))
        self.assertEqual(len(summary["record"]["history"]), 2)

    def test_the_wrapped_bundles_own_handler_reused(self):
        with self.assertLogs("fixture_train_stats", level="INFO") as logs:
            self.run_overlay("stats", **{"unlearn#extra_handlers": ["@train#handlers#0"]})
        # MONAI's StatsHandler of the wrapped bundle logs the unlearning loss of every iteration
        self.assertTrue(any("train_loss" in line for line in logs.output), logs.output[:3])

    @unittest.skipUnless(has_tensorboard, "tensorboard is an optional extra (pip install monai-unlearn[tracking])")
    def test_tensorboard_handler_added(self):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        log_dir = os.path.join(self.tmp, "tb")
        handler = {"_target_": "TensorBoardStatsHandler", "log_dir": log_dir, "tag_name": "unlearn_loss",
                   "output_transform": "$monai.handlers.from_engine(['loss'], first=True)"}
        parser, summary = self.run_overlay("tensorboard", **{"unlearn#extra_handlers": [handler]})
        parser.get_parsed_content("unlearn#extra_handlers")[0].close()  # flush the event file
        events = EventAccumulator(log_dir)
        events.Reload()
        losses = events.Scalars("unlearn_loss")
        self.assertEqual(len(losses), summary["record"]["iterations"])


class TestCommandLine(ComponentsCase):
    def command(self, out: str, *extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "monai.bundle", "run", "unlearn",
               "--config_file", f"['{self.zoo}/configs/train.json', '{UNLEARN_CONFIG}']",
               "--meta_file", f"{self.zoo}/configs/metadata.json", "--bundle_root", self.zoo,
               "--forget", "label=2", "--output_dir", out, "--unlearn_epochs", "2", "--unlearn_progress", "false",
               *extra]
        env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=self.tmp, timeout=300)

    def test_overrides_by_id_on_the_command_line(self):
        out = os.path.join(self.tmp, "out", "cli_rmsprop")
        proc = self.command(out, "--unlearn#optimizer#_target_", "torch.optim.RMSprop", "--unlearn#optimizer#lr", "0.002",
                            "--unlearn#extra_handlers", "['@train#handlers#0']", "--unlearn#progress#_disabled_", "true")
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        report = json.load(open(os.path.join(out, "unlearning", "report.json")))
        self.assertEqual(report["optimizer"]["name"], "RMSprop")
        self.assertEqual(report["optimizer"]["lr"], 0.002)
        self.assertIn("train_loss", proc.stdout + proc.stderr)  # the wrapped bundle's StatsHandler logged the steps

    def test_bad_request_names_its_cause(self):
        # MONAI wraps a component's error in "Failed to instantiate ..."; the cause gets a line of its own, and the
        # Python entry point raises the original error
        with self.assertLogs("monai_unlearn.bundle.request", level="ERROR") as logs:
            with self.assertRaisesRegex(ForgetSelectionError, "scanner_z"):
                self.run_overlay("bad", forget="device=scanner_z")
        self.assertIn("unlearning cannot start: ForgetSelectionError", logs.output[0])

    @unittest.skipUnless(has_mlflow, "mlflow-skinny is an optional extra (pip install monai-unlearn[tracking])")
    def test_mlflow_tracking_with_a_local_store(self):
        from monai.bundle import run

        out = os.path.join(self.tmp, "out", "cli_mlflow")
        settings = os.path.join(REPO, "bundles", "unlearn", "configs", "mlflow_tracking.json")
        # what `python -m monai.bundle run unlearn ... --tracking <settings>` calls, in this process
        run("unlearn", config_file=[os.path.join(self.zoo, "configs", "train.json"), UNLEARN_CONFIG],
            meta_file=os.path.join(self.zoo, "configs", "metadata.json"), bundle_root=self.zoo, forget="label=2",
            output_dir=out, unlearn_epochs=2, unlearn_progress=False, tracking=settings, logging_file=False)
        from monai.utils import path_to_sqlite_uri

        store = path_to_sqlite_uri(os.path.abspath(out) + ".mlruns.db")  # MLflow's local store: one SQLite file
        client = mlflow.tracking.MlflowClient(tracking_uri=store)
        experiment = client.get_experiment_by_name("monai_unlearn")
        runs = client.search_runs([experiment.experiment_id])
        self.assertEqual(len(runs), 1)
        history = client.get_metric_history(runs[0].info.run_id, "unlearn_loss")
        report = json.load(open(os.path.join(out, "unlearning", "report.json")))
        self.assertEqual(len(history), report["iterations"])
        self.assertEqual(tree_digest(self.zoo), self.digest)


class TestDiscovery(unittest.TestCase):
    @parameterized.expand([("unlearn#optimizer#lr",), ("unlearn#trainer#max_epochs",), ("unlearn_params",),
                           ("unlearn#handlers",), ("unlearn#extra_handlers",)])
    def test_ids_are_listed(self, key):
        self.assertIn(key, dict(overlay_ids()))

    def test_ids_command(self):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            main(["ids"])
        self.assertIn("unlearn#optimizer#lr", printed.getvalue())
        self.assertIn('"@unlearn_lr"', printed.getvalue())


if __name__ == "__main__":
    unittest.main()
