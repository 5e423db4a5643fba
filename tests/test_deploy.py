"""The MONAI Deploy application (``monai_unlearn.deploy``) on a tiny classification bundle and its unlearned copy.

The App SDK lives in its own environment (``bash scripts/setup_deploy_env.sh`` makes ``.venv-deploy``); the app
runs there in a subprocess unless the SDK is importable here. Without that environment the app tests are
skipped, unless ``MONAI_UNLEARN_REQUIRE_DEPLOY=1`` (set it in CI once the environment is created there), which
turns the absence into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser

from monai_unlearn.bundle import export_torchscript, unlearn_from_parser
from monai_unlearn.deploy import deploy_python, has_deploy_sdk
from monai_unlearn.deploy.operators import PREDICTIONS_FILE, PredictionWriterOperator, list_nifti_files
from tests.bundle_fixtures import TRANSFORMS, UNLEARN_CONFIG, make_images, split, write_json_zoo_bundle

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = os.environ.get("MONAI_UNLEARN_REQUIRE_DEPLOY", "") == "1"
FORGET_LABEL = 2


def app_python() -> str | None:
    """The interpreter that runs the app: this one when it has the SDK, else the deploy environment's."""
    return sys.executable if has_deploy_sdk() else deploy_python(REPO)


PYTHON = app_python()
SKIP_REASON = ("no MONAI Deploy App SDK here and no deploy environment: run `bash scripts/setup_deploy_env.sh` "
               "(or set MONAI_UNLEARN_DEPLOY_PYTHON)")


def run_app(model: str, inputs: str, output: str, cwd: str, timeout: int = 300) -> float:
    """Run ``python -m monai_unlearn.deploy.app`` in the deploy interpreter; returns the seconds it took."""
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run([PYTHON, "-m", "monai_unlearn.deploy.app", "-i", inputs, "-o", output, "-m", model],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"the deploy app failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return time.perf_counter() - start


def add_inference_sections(bundle: str) -> None:
    """Give the fixture's inference.json what a deployable bundle has: preprocessing, inferer, postprocessing."""
    path = os.path.join(bundle, "configs", "inference.json")
    with open(path) as f:
        config = json.load(f)
    config.update({
        "preprocessing": {"_target_": "Compose", "transforms": TRANSFORMS},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose",
                           "transforms": [{"_target_": "Activationsd", "keys": "pred", "softmax": True}]},
    })
    with open(path, "w") as f:
        json.dump(config, f, indent=2)


def direct_probabilities(model_ts: str, files: list[str]) -> dict[str, list[float]]:
    """Softmax of the TorchScript model on each file after the bundle's own preprocessing (with LoadImaged)."""
    extra = {"inference.json": ""}
    net = torch.jit.load(model_ts, map_location="cpu", _extra_files=extra).eval()
    parser = ConfigParser(json.loads(extra["inference.json"]))
    preprocessing = parser.get_parsed_content("preprocessing")
    out = {}
    with torch.no_grad():
        for path in files:
            image = preprocessing({"image": path})["image"]
            out[path] = torch.softmax(net(torch.as_tensor(image)[None].float()), 1)[0].tolist()
    return out


class TestDeployHelpers(unittest.TestCase):
    """Parts that need no SDK."""

    def test_package_import_does_not_import_the_sdk(self):
        code = "import sys, monai_unlearn.deploy, monai_unlearn.deploy.app; print('holoscan' in sys.modules)"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        self.assertEqual(proc.stdout.strip(), "False")

    def test_list_nifti_files_and_records(self):
        tmp = tempfile.mkdtemp()
        try:
            with self.assertRaisesRegex(FileNotFoundError, "no NIfTI file"):
                list_nifti_files(tmp)
            for name in ("b.nii.gz", "a.nii", "skip.npy"):
                open(os.path.join(tmp, name), "w").close()
            self.assertEqual([p.name for p in list_nifti_files(tmp)], ["a.nii", "b.nii.gz"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        record = PredictionWriterOperator.classification_record(np.array([0.0, 2.0, 0.0]), False, {"1": "b"})
        self.assertEqual((record["argmax"], record["class_name"]), (1, "b"))
        self.assertAlmostEqual(sum(record["probabilities"]), 1.0, places=6)

    def test_main_without_sdk_names_the_setup_script(self):
        if has_deploy_sdk():
            self.skipTest("the SDK is installed in this interpreter")
        from monai_unlearn.deploy.app import main

        with self.assertRaisesRegex(ImportError, "setup_deploy_env.sh"):
            main(["app", "-i", ".", "-o", ".", "-m", "."])


@unittest.skipUnless(PYTHON or REQUIRED, SKIP_REASON)
class TestDeployApp(unittest.TestCase):
    """Original and unlearned bundle through the app; predictions equal direct TorchScript inference."""

    @classmethod
    def setUpClass(cls):
        if PYTHON is None:
            raise AssertionError(f"MONAI_UNLEARN_REQUIRE_DEPLOY=1 but {SKIP_REASON}")
        torch.set_num_threads(1)
        cls.tmp = tempfile.mkdtemp()
        items = make_images(os.path.join(cls.tmp, "data"), per_class_device=6)
        cls.bundle = write_json_zoo_bundle(os.path.join(cls.tmp, "zoo"), items)
        add_inference_sections(cls.bundle)
        # the original bundle's TorchScript, as `monai.bundle ckpt_export` would write it
        parser = ConfigParser()
        parser.read_config(os.path.join(cls.bundle, "configs", "inference.json"))
        net = parser.get_parsed_content("network_def")
        net.load_state_dict(torch.load(os.path.join(cls.bundle, "models", "model.pt"), weights_only=True))
        with open(os.path.join(cls.bundle, "configs", "metadata.json")) as f:
            meta = json.load(f)
        cls.original_ts = export_torchscript(net, os.path.join(cls.bundle, "models", "model.ts"), meta,
                                             {"inference": os.path.join(cls.bundle, "configs", "inference.json")},
                                             torch.rand(1, 1, 16, 16))
        # the unlearned bundle, from the unlearn command's entry point
        parser = ConfigParser()
        parser.read_config([os.path.join(cls.bundle, "configs", "train.json"), UNLEARN_CONFIG])
        parser.read_meta(os.path.join(cls.bundle, "configs", "metadata.json"))
        parser["bundle_root"] = cls.bundle
        unlearned = os.path.join(cls.tmp, "unlearned")
        for key, value in {"forget": f"label={FORGET_LABEL}", "output_dir": unlearned, "unlearn_progress": False,
                           "unlearn_params#eps": 0.3}.items():
            parser[key] = value
        unlearn_from_parser(parser)
        cls.unlearned_ts = os.path.join(unlearned, "models", "model.ts")
        # NIfTI inputs: forgotten training items and kept validation items
        train, val = split(items)
        chosen = [it for it in train if it["label"] == FORGET_LABEL][:3] + [it for it in val if it["label"] != FORGET_LABEL][:3]
        cls.inputs = os.path.join(cls.tmp, "inputs")
        os.makedirs(cls.inputs)
        cls.forget_files, cls.files = [], []
        for i, it in enumerate(chosen):
            path = os.path.join(cls.inputs, f"case{i}_label{it['label']}.nii.gz")
            nib.save(nib.Nifti1Image(np.load(it["image"]), np.eye(4)), path)
            cls.files.append(path)
            if it["label"] == FORGET_LABEL:
                cls.forget_files.append(path)
        cls.seconds = {}
        cls.predictions = {}
        for name, model in (("original", cls.original_ts), ("unlearned", cls.unlearned_ts)):
            out = os.path.join(cls.tmp, f"out_{name}")
            cls.seconds[name] = run_app(model, cls.inputs, out, cwd=cls.tmp)
            with open(os.path.join(out, PREDICTIONS_FILE)) as f:
                cls.predictions[name] = json.load(f)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(getattr(cls, "tmp", ""), ignore_errors=True)

    def test_predictions_equal_direct_torchscript(self):
        for name, model in (("original", self.original_ts), ("unlearned", self.unlearned_ts)):
            predictions = self.predictions[name]
            self.assertEqual(sorted(predictions), sorted(self.files), name)
            for path, probs in direct_probabilities(model, self.files).items():
                record = predictions[path]
                np.testing.assert_allclose(record["probabilities"], probs, atol=1e-5, err_msg=f"{name} {path}")
                self.assertEqual(record["argmax"], int(np.argmax(probs)))

    def test_unlearned_bundle_predicts_differently_on_forget_data(self):
        original = [self.predictions["original"][p]["argmax"] for p in self.forget_files]
        unlearned = [self.predictions["unlearned"][p]["argmax"] for p in self.forget_files]
        self.assertEqual(original, [FORGET_LABEL] * len(self.forget_files))
        self.assertNotIn(FORGET_LABEL, unlearned)
        kept = [p for p in self.files if p not in self.forget_files]
        self.assertEqual([self.predictions["original"][p]["argmax"] for p in kept],
                         [self.predictions["unlearned"][p]["argmax"] for p in kept])


@unittest.skipUnless(PYTHON or REQUIRED, SKIP_REASON)
class TestDeployTutorial(unittest.TestCase):
    def test_tutorial_quick(self):
        if PYTHON is None:
            raise AssertionError(f"MONAI_UNLEARN_REQUIRE_DEPLOY=1 but {SKIP_REASON}")
        workdir = tempfile.mkdtemp()
        try:
            proc = subprocess.run(
                [sys.executable, os.path.join(REPO, "tutorials", "03_deploy_an_unlearned_bundle.py"), "--quick",
                 "--workdir", workdir], capture_output=True, text=True, cwd=REPO, timeout=400,
                env={**os.environ, "MONAI_UNLEARN_DEPLOY_PYTHON": PYTHON})
            self.assertEqual(proc.returncode, 0, (proc.stdout + proc.stderr)[-4000:])
            for name in ("original", "unlearned"):
                self.assertTrue(os.path.isfile(os.path.join(workdir, f"predictions_{name}", PREDICTIONS_FILE)), name)
            self.assertIn("app predictions match direct TorchScript inference", proc.stdout)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
