"""The README's Python examples run as written."""

from __future__ import annotations

import os
import re
import tempfile
import unittest

import torch
from torch.utils.data import DataLoader, Subset

from tests.test_runner import DigitsCase

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_blocks() -> list[str]:
    with open(README, encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


class TestReadmeExamples(DigitsCase):
    def test_unlearn_example(self):
        # the held-out digits split in two: validation data for the default's calibration, and the test set
        held_out = self.test_loader.dataset
        half = len(held_out) // 2
        namespace = {
            "model": self.original, "forget_loader": self.forget_loader, "remain_loader": self.remain_loader,
            "val_loader": DataLoader(Subset(held_out, range(half)), 64),
            "test_loader": DataLoader(Subset(held_out, range(half, len(held_out))), 64),
        }
        torch.manual_seed(0)  # the remain loader shuffles with the global generator
        exec(python_blocks()[0], namespace)  # noqa: S102 - our own documentation
        result = namespace["result"]
        self.assertEqual(result.stopping["regime"]["regime"], "class")  # the defaults, nothing else set
        self.assertEqual(result.after["forget"]["accuracy"], 0.0)
        self.assertGreater(result.after["remain"]["accuracy"], result.before["remain"]["accuracy"] - 0.02)
        self.assertIsNot(namespace["revised"], self.original)

    def test_selection_example(self):
        datalist = [{"image": f"img{i}.nii.gz", "label": i % 3, "device": "scanner_a" if i < 4 else "scanner_b"}
                    for i in range(30)]
        with tempfile.TemporaryDirectory() as tmp:
            cwd = os.getcwd()
            os.chdir(tmp)
            try:
                with open("withdrawn_consent.txt", "w") as f:
                    f.write("img5.nii.gz\nimg7.nii.gz\n")
                namespace = {"datalist": datalist}
                exec(python_blocks()[1], namespace)  # noqa: S102
            finally:
                os.chdir(cwd)
        self.assertEqual([d["image"] for d in namespace["forget"]], ["img5.nii.gz", "img7.nii.gz"])
        self.assertEqual(len(namespace["remain"]), 28)


if __name__ == "__main__":
    unittest.main()
