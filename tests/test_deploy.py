"""The MONAI Deploy application (``monai_unlearn.deploy``) on a tiny classification bundle and its unlearned copy,
with NIfTI files and DICOM series, and on a tiny 3D segmentation bundle with a DICOM series.

The App SDK lives in its own environment (``bash scripts/setup_deploy_env.sh`` makes ``.venv-deploy``); the app
runs there in a subprocess unless the SDK is importable here. Without that environment the app tests are
skipped, unless ``MONAI_UNLEARN_REQUIRE_DEPLOY=1`` (set it in CI once the environment is created there), which
turns the absence into a failure. The DICOM series are written here with pydicom (a ``dev`` dependency).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from collections.abc import Sequence

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose
from monai.utils import optional_import

from monai_unlearn.bundle import export_torchscript, unlearn_from_parser
from monai_unlearn.deploy import deploy_python, has_deploy_sdk
from monai_unlearn.deploy.operators import (
    PREDICTIONS_FILE,
    PredictionWriterOperator,
    detect_input_format,
    dicom_problem,
    list_dicom_files,
    list_nifti_files,
    series_file_name,
)
from tests.bundle_fixtures import TRANSFORMS, UNLEARN_CONFIG, make_images, split, write_json_zoo_bundle
from tests.deploy_dicom_fixtures import rescaled, truncate, write_ct_series
from tests.segmentation_fixtures import SEG_CLASSES, UNET_3D, tiny_unet

_, has_pydicom = optional_import("pydicom")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = os.environ.get("MONAI_UNLEARN_REQUIRE_DEPLOY", "") == "1"
FORGET_LABEL = 2


def app_python() -> str | None:
    """The interpreter that runs the app: this one when it has the SDK, else the deploy environment's."""
    return sys.executable if has_deploy_sdk() else deploy_python(REPO)


PYTHON = app_python()
SKIP_REASON = ("no MONAI Deploy App SDK here and no deploy environment: run `bash scripts/setup_deploy_env.sh` "
               "(or set MONAI_UNLEARN_DEPLOY_PYTHON)")


def app_process(model: str, inputs: str, output: str, cwd: str, options: Sequence[str] = (),
                timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m monai_unlearn.deploy.app -i inputs -o output -m model *options`` in the deploy interpreter."""
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [PYTHON, "-m", "monai_unlearn.deploy.app", "-i", inputs, "-o", output, "-m", model, *options],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def run_app(model: str, inputs: str, output: str, cwd: str, options: Sequence[str] = (), timeout: int = 300) -> float:
    """:func:`app_process`, which must succeed; returns the seconds it took."""
    start = time.perf_counter()
    proc = app_process(model, inputs, output, cwd, options, timeout)
    if proc.returncode != 0:
        raise AssertionError(f"the deploy app failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return time.perf_counter() - start


def read_series_outputs(folder: str, suffix: str = ".json") -> dict[str, str]:
    """File name -> path of the app's per-series outputs in ``folder``."""
    return {os.path.basename(p): p for p in glob.glob(os.path.join(folder, f"*{suffix}"))}


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


def direct_array_probabilities(model_ts: str, arrays: Sequence[np.ndarray]) -> list[list[float]]:
    """Softmax of the TorchScript model on in-memory 2D arrays after the embedded preprocessing without ``LoadImage*``
    (what the SDK's bundle operator runs on an ``Image``)."""
    extra = {"inference.json": ""}
    net = torch.jit.load(model_ts, map_location="cpu", _extra_files=extra).eval()
    preprocessing = ConfigParser(json.loads(extra["inference.json"])).get_parsed_content("preprocessing")
    transforms = Compose([t for t in preprocessing.transforms if not type(t).__name__.startswith("LoadImage")])
    out = []
    with torch.no_grad():
        for array in arrays:
            image = MetaTensor(torch.as_tensor(array), meta={"original_channel_dim": "no_channel"})
            image = transforms({"image": image})["image"]
            out.append(torch.softmax(net(torch.as_tensor(image)[None].float()), 1)[0].tolist())
    return out


def write_fake_dicom(path: str) -> str:
    """A file that is DICOM by its marker only (``DICM`` at byte 128): enough for input detection."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\0" * 128 + b"DICM" + b"\0" * 16)
    return path


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

    def test_detect_input_format(self):
        tmp = tempfile.mkdtemp()
        try:
            open(os.path.join(tmp, "notes.txt"), "w").close()
            with self.assertRaises(FileNotFoundError) as raised:
                detect_input_format(tmp)
            message = str(raised.exception)
            for part in ("no NIfTI file (.nii, .nii.gz)", "no DICOM file ('DICM' at byte 128)", tmp, "subfolders"):
                self.assertIn(part, message)
            with self.assertRaisesRegex(FileNotFoundError, "no DICOM file"):
                detect_input_format(tmp, "dicom")
            dicom = write_fake_dicom(os.path.join(tmp, "series", "IM0001"))  # no suffix, one folder down
            self.assertEqual(detect_input_format(tmp), "dicom")
            self.assertEqual([str(p) for p in list_dicom_files(tmp)], [dicom])
            with self.assertRaisesRegex(ValueError, "single DICOM file"):
                detect_input_format(dicom)
            with self.assertRaisesRegex(FileNotFoundError, "no NIfTI file"):
                detect_input_format(tmp, "nifti")
            open(os.path.join(tmp, "a.nii.gz"), "w").close()
            with self.assertRaisesRegex(ValueError, "both NIfTI .1. and DICOM .1. files.*--input-format"):
                detect_input_format(tmp)
            self.assertEqual((detect_input_format(tmp, "nifti"), detect_input_format(tmp, "dicom")), ("nifti", "dicom"))
            with self.assertRaisesRegex(ValueError, "not one of"):
                detect_input_format(tmp, "png")
            with self.assertRaisesRegex(FileNotFoundError, "does not exist"):
                detect_input_format(os.path.join(tmp, "missing"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @unittest.skipUnless(has_pydicom, "pydicom is not installed")
    def test_dicom_problem_names_truncated_files(self):
        from pydicom import dcmread

        tmp = tempfile.mkdtemp()
        try:
            images = [np.full((4, 6), 0.5, np.float32)] * 3
            files = [w["path"] for w in write_ct_series(tmp, images, [0.0, 1.0, 2.0])]
            self.assertIsNone(dicom_problem(dcmread(files[0])))
            truncate(files[1], keep=400)  # pydicom reads it without complaint: only the first elements
            self.assertRegex(dicom_problem(dcmread(files[1])), "StudyInstanceUID.*missing")
            truncate(files[2], drop=10)  # cut inside the pixel data
            self.assertEqual(dicom_problem(dcmread(files[2])), "pixel data holds 38 of 48 bytes")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def test_series_summary_and_file_names(self):
        records = [{"probabilities": p, "argmax": int(np.argmax(p))}
                   for p in ([0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.4, 0.1, 0.5], [0.1, 0.6, 0.3])]
        summary = PredictionWriterOperator.series_summary(records, {"0": "a", "1": "b", "2": "c"})
        self.assertEqual(summary["votes"], [1, 2, 1])
        self.assertEqual((summary["majority_argmax"], summary["majority_class_name"]), (1, "b"))
        np.testing.assert_allclose(summary["mean_probabilities"], [0.325, 0.425, 0.25])
        self.assertEqual((summary["mean_argmax"], summary["mean_class_name"], summary["num_slices"]), (1, "b", 4))
        tie = PredictionWriterOperator.series_summary(records[:2], None)  # one vote each: the lowest class wins
        self.assertEqual((tie["majority_argmax"], tie["mean_argmax"]), (0, 1))
        self.assertNotIn("majority_class_name", tie)
        self.assertEqual(series_file_name("1.2.840.113619.2.55"), "1.2.840.113619.2.55")
        self.assertEqual(series_file_name("../1.2 3/x"), "_1.2_3_x")
        self.assertEqual(series_file_name(".."), "series")

    def test_app_options(self):
        from monai_unlearn.deploy.app import parse_app_options, read_dicom_rules

        options, rest = parse_app_options(["-i", "IN", "--input-format", "dicom", "-o", "OUT", "--dicom-rules", "r"])
        self.assertEqual((options.input_format, options.dicom_rules, rest), ("dicom", "r", ["-i", "IN", "-o", "OUT"]))
        self.assertEqual(parse_app_options(["-m", "M"])[0].input_format, "auto")
        self.assertEqual(read_dicom_rules(None), "")
        tmp = tempfile.mkdtemp()
        try:
            path = os.path.join(tmp, "rules.json")
            with self.assertRaisesRegex(FileNotFoundError, "rules.json does not exist"):
                read_dicom_rules(path)
            for text, error in (("{not json", "not valid JSON"), ('{"rules": []}', 'no "selections" list')):
                with open(path, "w") as f:
                    f.write(text)
                with self.assertRaisesRegex(ValueError, error):
                    read_dicom_rules(path)
            with open(path, "w") as f:
                f.write('{"selections": [{"name": "ct", "conditions": {"Modality": "CT"}}]}')
            self.assertIn("selections", read_dicom_rules(path))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

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
        # the same images as two DICOM CT series (forgotten items, kept items) in subfolders, next to a text file.
        # Each slice is stored transposed, so that the app's slice (pydicom's pixel_array transposed, see the README)
        # is the image itself; z decreases with InstanceNumber, so the SDK's order (ascending z) reverses the files.
        from pydicom import dcmread

        cls.dicom_inputs = os.path.join(cls.tmp, "dicom_inputs")
        cls.dicom_slices = {}  # SOPInstanceUID -> the app's slice array (rescaled, as the SDK makes it) and z
        cls.dicom_series = {}  # output file name -> "forget" / "kept"
        kept_files = [f for f in cls.files if f not in cls.forget_files]
        for group, paths in (("forget", cls.forget_files), ("kept", kept_files)):
            images = [np.asarray(nib.load(path).dataobj, dtype=np.float32) for path in paths]
            written = write_ct_series(os.path.join(cls.dicom_inputs, group), [im.T for im in images],
                                      z_positions=[2.5 * (len(images) - k) for k in range(len(images))],
                                      description=group)
            for w in written:
                cls.dicom_slices[w["sop_uid"]] = {"pixels": rescaled(w["stored"]).T, "z": w["z"], "path": w["path"]}
            cls.dicom_series[f"{series_file_name(dcmread(written[0]['path']).SeriesInstanceUID)}.json"] = group
        with open(os.path.join(cls.dicom_inputs, "README.txt"), "w") as f:
            f.write("not an image: the DICOM loader ignores it")
        cls.seconds = {}
        cls.predictions = {}
        cls.dicom_predictions = {}
        for name, model in (("original", cls.original_ts), ("unlearned", cls.unlearned_ts)):
            out = os.path.join(cls.tmp, f"out_{name}")
            cls.seconds[name] = run_app(model, cls.inputs, out, cwd=cls.tmp)
            with open(os.path.join(out, PREDICTIONS_FILE)) as f:
                cls.predictions[name] = json.load(f)
            out = os.path.join(cls.tmp, f"out_dicom_{name}")
            cls.seconds[f"{name} DICOM"] = run_app(model, cls.dicom_inputs, out, cwd=cls.tmp)  # --input-format auto
            cls.dicom_predictions[name] = {}
            for file_name, path in read_series_outputs(out).items():
                with open(path) as f:
                    cls.dicom_predictions[name][file_name] = json.load(f)

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


    def test_dicom_slices_equal_direct_torchscript(self):
        for name, model in (("original", self.original_ts), ("unlearned", self.unlearned_ts)):
            outputs = self.dicom_predictions[name]
            self.assertEqual(sorted(outputs), sorted(self.dicom_series), f"{name}: one JSON per series, named by UID")
            for file_name, record in outputs.items():
                self.assertEqual(f"{series_file_name(record['SeriesInstanceUID'])}.json", file_name)
                self.assertEqual((record["Modality"], record["SeriesDescription"]),
                                 ("CT", self.dicom_series[file_name]))
                slices = record["slices"]
                self.assertEqual([s["index"] for s in slices], list(range(3)))
                expected = [self.dicom_slices[s["SOPInstanceUID"]] for s in slices]
                self.assertEqual([e["z"] for e in expected], sorted(e["z"] for e in expected), "SDK order: ascending z")
                self.assertEqual([s["InstanceNumber"] for s in slices], [3, 2, 1])
                direct = direct_array_probabilities(model, [e["pixels"] for e in expected])
                for s, probs in zip(slices, direct):
                    np.testing.assert_allclose(s["probabilities"], probs, atol=1e-5, err_msg=f"{name} {file_name}")
                    self.assertEqual(s["argmax"], int(np.argmax(probs)))
                summary = record["summary"]
                self.assertEqual(summary["num_slices"], 3)
                self.assertEqual(summary["votes"], np.bincount([s["argmax"] for s in slices], minlength=3).tolist())
                self.assertEqual(summary["majority_argmax"], int(np.argmax(summary["votes"])))
                np.testing.assert_allclose(summary["mean_probabilities"], np.mean(direct, 0), atol=1e-5)
                self.assertEqual(summary["mean_argmax"], int(np.argmax(np.mean(direct, 0))))

    def test_dicom_slice_orientation(self):
        """The app classifies pixel_array.T, as MONAI's PydicomReader reads a slice, not pixel_array: that differs."""
        from monai.transforms import LoadImage

        forget = next(r for f, r in self.dicom_predictions["original"].items() if self.dicom_series[f] == "forget")
        pixels = [self.dicom_slices[s["SOPInstanceUID"]]["pixels"] for s in forget["slices"]]
        reader = LoadImage(image_only=True, reader="PydicomReader")
        for s, array in zip(forget["slices"], pixels):
            read = np.asarray(reader(self.dicom_slices[s["SOPInstanceUID"]]["path"])).squeeze()
            np.testing.assert_allclose(read, array, atol=1e-6)
        self.assertEqual([s["argmax"] for s in forget["slices"]], [FORGET_LABEL] * 3)
        transposed = direct_array_probabilities(self.original_ts, [p.T for p in pixels])
        app = [s["probabilities"] for s in forget["slices"]]
        self.assertGreater(np.abs(np.asarray(app) - np.asarray(transposed)).max(), 1e-3)

    def test_dicom_unlearned_bundle_forgets(self):
        by_group = {name: {self.dicom_series[f]: r for f, r in outputs.items()}
                    for name, outputs in self.dicom_predictions.items()}
        self.assertEqual(by_group["original"]["forget"]["summary"]["majority_argmax"], FORGET_LABEL)
        self.assertNotIn(FORGET_LABEL, [s["argmax"] for s in by_group["unlearned"]["forget"]["slices"]])
        self.assertEqual([s["argmax"] for s in by_group["original"]["kept"]["slices"]],
                         [s["argmax"] for s in by_group["unlearned"]["kept"]["slices"]])


def write_segmentation_model(root: str, shape: tuple[int, int, int]) -> str:
    """A 3D segmentation bundle's ``model.ts`` (untrained tiny UNet, fixed seed) with its inference config and
    metadata embedded; returns its path."""
    os.makedirs(root, exist_ok=True)
    inference = {
        "imports": ["$import torch"],
        "device": "$torch.device('cpu')",
        "network_def": UNET_3D,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "EnsureChannelFirstd", "keys": "image", "channel_dim": "no_channel"},
            {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"}]},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose",
                           "transforms": [{"_target_": "Activationsd", "keys": "pred", "softmax": True}]},
    }
    config_path = os.path.join(root, "inference.json")
    with open(config_path, "w") as f:
        json.dump(inference, f)
    meta = {"version": "0.1.0", "changelog": {"0.1.0": "fixture"}, "name": "fixture 3D segmenter",
            "network_data_format": {
                "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": list(shape)}},
                "outputs": {"pred": {"type": "image", "num_channels": SEG_CLASSES, "spatial_shape": list(shape)}}}}
    net = tiny_unet(spatial_dims=3, seed=3)
    return export_torchscript(net, os.path.join(root, "model.ts"), meta, {"inference": config_path},
                              torch.rand(1, 1, *shape))


@unittest.skipUnless(PYTHON or REQUIRED, SKIP_REASON)
class TestDeployDicomSegmentation(unittest.TestCase):
    """A 3D segmenter on a DICOM series (whole volume, NIfTI label map named by UID), and the app's clear errors."""

    ROWS, COLUMNS, SLICES = 8, 12, 6  # all different, so that a swapped axis shows

    @classmethod
    def setUpClass(cls):
        if PYTHON is None:
            raise AssertionError(f"MONAI_UNLEARN_REQUIRE_DEPLOY=1 but {SKIP_REASON}")
        torch.set_num_threads(1)
        cls.tmp = tempfile.mkdtemp()
        shape = (cls.COLUMNS, cls.ROWS, cls.SLICES)  # what the bundle gets: (W, H, D)
        cls.model_ts = write_segmentation_model(os.path.join(cls.tmp, "seg_bundle"), shape)
        rng = np.random.default_rng(0)
        volume = rng.uniform(0.0, 1.0, (cls.SLICES, cls.ROWS, cls.COLUMNS))  # pixel arrays, by ascending z
        volume[:, 2:6, 3:9] += 2.0
        cls.series = os.path.join(cls.tmp, "series")
        cls.written = write_ct_series(os.path.join(cls.series, "volume"), list(volume[::-1]),
                                      [10.0 - 2.0 * k for k in range(cls.SLICES)], origin=(-30.0, 40.0),
                                      pixel_spacing=0.5, description="volume")[::-1]  # now by ascending z
        cls.volume_whd = np.stack([rescaled(w["stored"]) for w in cls.written]).transpose(2, 1, 0)
        # a second series in the same study that the selection rules leave out
        write_ct_series(os.path.join(cls.series, "other"), list(volume[:2]), [0.0, 2.0], description="other")
        rules = os.path.join(cls.tmp, "rules.json")
        with open(rules, "w") as f:
            json.dump({"selections": [{"name": "volume", "conditions": {"Modality": "CT",
                                                                        "SeriesDescription": "^volume$"}}]}, f)
        cls.out = os.path.join(cls.tmp, "out")
        cls.seconds = run_app(cls.model_ts, cls.series, cls.out, cwd=cls.tmp,
                              options=["--input-format", "dicom", "--dicom-rules", rules])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(getattr(cls, "tmp", ""), ignore_errors=True)

    def test_label_map_equals_direct_torchscript(self):
        from pydicom import dcmread

        uid = dcmread(self.written[0]["path"]).SeriesInstanceUID
        outputs = read_series_outputs(self.out, ".nii.gz")
        self.assertEqual(sorted(outputs), [f"{series_file_name(uid)}_seg.nii.gz"])
        label_map = nib.load(next(iter(outputs.values())))
        net = torch.jit.load(self.model_ts, map_location="cpu").eval()
        with torch.no_grad():
            expected = net(torch.as_tensor(self.volume_whd, dtype=torch.float32)[None, None]).argmax(1)[0].numpy()
        self.assertEqual(label_map.shape, (self.COLUMNS, self.ROWS, self.SLICES))
        self.assertGreater(len(np.unique(expected)), 1, "the fixture should give more than one label")
        np.testing.assert_array_equal(np.asarray(label_map.dataobj), expected)
        # the SDK's RAS affine: x and y negated (LPS -> RAS), origin at the lowest slice's ImagePositionPatient
        affine = np.array([[-0.5, 0, 0, 30.0], [0, -0.5, 0, -40.0], [0, 0, 2.0, 0.0], [0, 0, 0, 1]])
        np.testing.assert_allclose(label_map.affine, affine)

    def test_model_folder_as_in_a_map(self):
        # a MAP mounts a folder holding model.ts as the model path: -m may name that folder
        folder = os.path.join(self.tmp, "map_model")
        os.makedirs(folder)
        shutil.copy(self.model_ts, os.path.join(folder, "model.ts"))
        out = os.path.join(self.tmp, "out_folder")
        run_app(folder, self.series, out, cwd=self.tmp, options=["--input-format", "dicom", "--dicom-rules",
                                                                  os.path.join(self.tmp, "rules.json")])
        ours, theirs = read_series_outputs(out, ".nii.gz"), read_series_outputs(self.out, ".nii.gz")
        self.assertEqual(sorted(ours), sorted(theirs))
        for name in ours:
            np.testing.assert_array_equal(np.asarray(nib.load(ours[name]).dataobj),
                                          np.asarray(nib.load(theirs[name]).dataobj))

    def test_error_on_folder_without_images(self):
        empty = os.path.join(self.tmp, "no_images")
        os.makedirs(os.path.join(empty, "sub"))
        with open(os.path.join(empty, "sub", "notes.txt"), "w") as f:
            f.write("neither NIfTI nor DICOM")
        proc = app_process(self.model_ts, empty, os.path.join(self.tmp, "out_empty"), cwd=self.tmp)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(f"no NIfTI file (.nii, .nii.gz) and no DICOM file ('DICM' at byte 128) in {empty} or its "
                      "subfolders", proc.stderr)

    def test_error_on_truncated_dicom(self):
        broken = os.path.join(self.tmp, "broken")
        shutil.copytree(self.series, broken)
        cut_header, cut_pixels = (os.path.join(broken, "volume", os.path.basename(self.written[k]["path"]))
                                  for k in (1, 3))
        truncate(cut_header, keep=400)  # the SDK alone would drop this slice with a warning and go on
        truncate(cut_pixels, drop=50)  # the SDK alone would fail without naming the file
        out = os.path.join(self.tmp, "out_broken")
        proc = app_process(self.model_ts, broken, out, cwd=self.tmp)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("2 DICOM file(s) cannot be used, truncated or corrupt", proc.stderr)
        self.assertRegex(proc.stderr,
                         re.escape(cut_header) + r" \([A-Za-z, ]*StudyInstanceUID, SeriesInstanceUID missing\)")
        self.assertRegex(proc.stderr, re.escape(cut_pixels) + r" \(pixel data holds \d+ of 192 bytes\)")
        self.assertEqual(glob.glob(os.path.join(out, "*")), [], "nothing is written")


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
