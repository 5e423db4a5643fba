"""Writing the new bundle: complete or absent, never half-written; version bumps."""

from __future__ import annotations

import json
import os
import tempfile
import unittest
from unittest import mock

import torch
from parameterized import parameterized

from monai_unlearn.bundle.writer import bump_version, write_new_bundle


class TestWriter(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.source = os.path.join(self.tmp.name, "source")
        os.makedirs(os.path.join(self.source, "configs"))
        os.makedirs(os.path.join(self.source, "models"))
        with open(os.path.join(self.source, "configs", "metadata.json"), "w") as f:
            json.dump({"version": "1.2.3", "changelog": {"1.2.3": "old"}}, f)
        torch.save({"w": torch.zeros(2)}, os.path.join(self.source, "models", "model.pt"))
        self.state = {"w": torch.ones(2)}

    def tearDown(self):
        self.tmp.cleanup()

    def out(self, name="out"):
        return os.path.join(self.tmp.name, name)

    @parameterized.expand([("1.2.3", "1.2.4"), ("0.9", "0.10"), ("2", "3"), ("1.0.0rc1", "1.1.0rc1"), ("beta", "beta.1")])
    def test_bump_version(self, old, new):
        self.assertEqual(bump_version(old), new)

    def test_complete_bundle_with_changelog_first(self):
        meta = write_new_bundle(self.source, self.out(), self.state, "unlearned")
        self.assertEqual(meta["version"], "1.2.4")
        written = json.load(open(os.path.join(self.out(), "configs", "metadata.json")))
        self.assertEqual(list(written["changelog"]), ["1.2.4", "1.2.3"])
        self.assertTrue(torch.equal(torch.load(os.path.join(self.out(), "models", "model.pt"), weights_only=True)["w"], torch.ones(2)))
        self.assertTrue(torch.equal(torch.load(os.path.join(self.source, "models", "model.pt"), weights_only=True)["w"], torch.zeros(2)))

    def test_disk_full_during_write_leaves_nothing(self):
        def fail(root, meta):
            raise OSError(28, "No space left on device")

        with self.assertRaisesRegex(OSError, "No space left"):
            write_new_bundle(self.source, self.out(), self.state, "x", write_extras=fail)
        self.assertFalse(os.path.exists(self.out()))
        self.assertEqual(sorted(os.listdir(self.tmp.name)), ["source"])  # no temporary folder left behind

    def test_failed_save_leaves_nothing(self):
        with mock.patch("torch.save", side_effect=OSError(28, "No space left on device")):
            with self.assertRaises(OSError):
                write_new_bundle(self.source, self.out(), self.state, "x")
        self.assertEqual(sorted(os.listdir(self.tmp.name)), ["source"])

    def test_existing_output_refused_then_replaced_on_request(self):
        write_new_bundle(self.source, self.out(), self.state, "first")
        with self.assertRaisesRegex(FileExistsError, "already exists"):
            write_new_bundle(self.source, self.out(), self.state, "second")
        write_new_bundle(self.source, self.out(), {"w": torch.full((2,), 5.0)}, "second", overwrite=True)
        self.assertEqual(torch.load(os.path.join(self.out(), "models", "model.pt"), weights_only=True)["w"][0].item(), 5.0)

    def test_two_runs_racing_for_one_output(self):
        # the second writer passed the existence check before the first finished: its final move must fail
        # (os.replace will not replace a non-empty folder) and leave the first run's bundle intact
        def first_finishes_meanwhile(root, meta):
            write_new_bundle(self.source, self.out(), self.state, "first")

        with self.assertRaises(OSError):
            write_new_bundle(self.source, self.out(), {"w": torch.full((2,), 9.0)}, "second", write_extras=first_finishes_meanwhile)
        self.assertTrue(torch.equal(torch.load(os.path.join(self.out(), "models", "model.pt"), weights_only=True)["w"], torch.ones(2)))
        self.assertEqual(sorted(os.listdir(self.tmp.name)), ["out", "source"])

    def test_output_inside_source(self):
        with self.assertRaisesRegex(ValueError, "inside the wrapped bundle"):
            write_new_bundle(self.source, os.path.join(self.source, "new"), self.state, "x")


if __name__ == "__main__":
    unittest.main()
