"""Hostile and broken items in a wrapped bundle's data: each stops the run with a message naming the item (or is
skipped and reported on request), and nothing is written."""

from __future__ import annotations

import json
import os
import shutil

import nibabel as nib
import numpy as np

from monai_unlearn.bundle import sha256_text, unlearn_from_parser
from tests.bundle_fixtures import tree_digest
from tests.test_bundle_unlearn import BundleCase


class TestHostileItems(BundleCase):
    def bundle_with(self, name: str, index: int, write) -> tuple[str, str]:
        """A copy of the zoo bundle whose training item ``index`` is replaced by the file ``write(path)`` makes."""
        broken = os.path.join(self.tmp, name)
        shutil.copytree(self.zoo, broken)
        datalist_path = os.path.join(broken, "datalist.json")
        datalist = json.load(open(datalist_path))
        path = write(os.path.join(broken, "hostile"))
        datalist["training"][index]["image"] = path
        json.dump(datalist, open(datalist_path, "w"))
        return broken, path

    def run_stopping(self, bundle: str, pattern: str, forget: str = "label=2") -> None:
        out = self.out(os.path.basename(bundle))
        with self.assertRaisesRegex(ValueError, pattern):
            unlearn_from_parser(self.parser(bundle, forget=forget, output_dir=out))
        self.assertFalse(os.path.exists(out))

    def test_truncated_nifti_in_forget_set(self):
        def write(stem):
            nib.save(nib.Nifti1Image(np.full((16, 16), 0.5, np.float32), np.eye(4)), stem + ".nii.gz")
            data = open(stem + ".nii.gz", "rb").read()
            open(stem + "_cut.nii.gz", "wb").write(data[: len(data) // 2])
            return stem + "_cut.nii.gz"

        bundle, path = self.bundle_with("cut_nifti", 0, write)
        label = json.load(open(os.path.join(bundle, "datalist.json")))["training"][0]["label"]
        self.run_stopping(bundle, rf"forget item '{path}' cannot be used: \w+Error", forget=f"label={label}")
        # skip-and-report: the run goes on without it and the report lists it, hashed
        out = self.out("cut_nifti_skipped")
        summary = unlearn_from_parser(self.parser(bundle, forget=f"label={label}", output_dir=out, unlearn_epochs=1,
                                                  unlearn_screen_inputs="skip"))
        skipped = summary["record"]["skipped_items"]
        self.assertEqual([(s["id_sha256"], s["set"]) for s in skipped], [(sha256_text(path), "forget")])
        self.assertEqual(tree_digest(self.zoo), self.zoo_digest)

    def test_corrupt_dicom_in_remain_set(self):
        def write(stem):
            with open(stem + ".dcm", "wb") as f:
                f.write(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI" + os.urandom(40))  # a header cut short
            return stem + ".dcm"

        bundle, path = self.bundle_with("bad_dicom", 0, write)
        self.run_stopping(bundle, rf"remain item '{path}' cannot be used")

    def test_nan_in_nifti(self):
        def write(stem):
            image = np.full((16, 16), 0.5, np.float32)
            image[3, 4] = np.nan
            nib.save(nib.Nifti1Image(image, np.eye(4)), stem + ".nii.gz")
            return stem + ".nii.gz"

        bundle, path = self.bundle_with("nan_nifti", 0, write)
        self.run_stopping(bundle, rf"'{path}' cannot be used: the image contains NaN or infinite values")

    def test_image_of_another_size(self):
        def write(stem):
            np.save(stem + ".npy", np.full((20, 20), 0.5, np.float32))
            return stem + ".npy"

        # later in the data: it differs from the image the network was checked with
        bundle, path = self.bundle_with("big_image", 0, write)
        self.run_stopping(bundle, rf"'{path}' cannot be used: its image shape \(1, 20, 20\) differs from \(1, 16, 16\)")

    def test_first_image_does_not_fit_the_network(self):
        def write(stem):
            np.save(stem + ".npy", np.full((2, 16, 16), 0.5, np.float32))  # two channels for a one-channel network
            return stem + ".npy"

        datalist = json.load(open(os.path.join(self.zoo, "datalist.json")))["training"]
        first_forget = next(i for i, it in enumerate(datalist) if it["label"] == 2)
        bundle, path = self.bundle_with("two_channels", first_forget, write)
        self.run_stopping(bundle, rf"forget item '{path}' cannot be used: the network cannot process an image of shape")
