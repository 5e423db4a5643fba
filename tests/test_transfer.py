"""The retrain-free transfer check: do random-feature probes trained on kept items recognise the forget items?"""

from __future__ import annotations

import unittest

import torch
from torch.utils.data import DataLoader, TensorDataset

from monai_unlearn.handlers import regime_stop_handler
from monai_unlearn.metrics.transfer import source_transfer


def blob_images(n: int, inverted: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 1, 12, 12)`` images whose class (0-2) is the band of rows holding a bright blob; ``inverted``: a second
    scanner with the contrast flipped (dark blob on a bright background), which kept data of the first does not
    teach."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = 0.1 * torch.rand(n, 1, 12, 12, generator=g)
    for i, c in enumerate(labels.tolist()):
        col = int(torch.randint(0, 8, (1,), generator=g))
        images[i, 0, 4 * c: 4 * c + 4, col: col + 4] += 0.9
    return (1.0 - images if inverted else images), labels


def conv_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 3))


def loader(x, y, batch=32):
    return DataLoader(TensorDataset(x, y), batch)


class TestSourceTransfer(unittest.TestCase):
    def setUp(self):
        torch.set_num_threads(1)
        self.kept = blob_images(150, False, 0)
        self.held_out = blob_images(60, False, 1)

    def test_a_source_unlike_the_kept_ones_is_detected_and_gives_a_ratio(self):
        retired = blob_images(90, True, 2)
        result = source_transfer(conv_net(), loader(*retired), loader(*self.kept), loader(*self.held_out), [0, 1, 2])
        self.assertTrue(result["applies"])
        self.assertGreater(result["z"], 3.0)
        self.assertLess(result["ratio"], 0.8)
        self.assertAlmostEqual(result["ratio"], result["probe_forget"] / result["probe_held_out"], places=6)
        self.assertEqual((result["forget_items"], result["held_out_items"]), (90, 60))

    def test_items_like_the_kept_ones_leave_the_target_alone(self):
        subset = blob_images(90, False, 3)  # a random subset of the same scanner
        result = source_transfer(conv_net(), loader(*subset), loader(*self.kept), loader(*self.held_out), [0, 1, 2])
        self.assertFalse(result["applies"])
        self.assertEqual(result["ratio"], 1.0)

    def test_only_the_requested_labels_are_compared_and_weights_are_untouched(self):
        net = conv_net()
        before = {k: v.clone() for k, v in net.state_dict().items()}
        retired = blob_images(90, True, 2)
        result = source_transfer(net, loader(*retired), loader(*self.kept), loader(*self.held_out), [1])
        self.assertEqual((result["forget_items"], result["held_out_items"]), (30, 20))
        torch.manual_seed(123)  # the random networks come from the check's own seed, not the caller's state
        again = source_transfer(net, loader(*retired), loader(*self.kept), loader(*self.held_out), [1])
        self.assertEqual(result, again)
        for name, value in net.state_dict().items():
            self.assertTrue(torch.equal(before[name], value), name)

    def test_max_items_bounds_what_is_read(self):
        retired = blob_images(90, True, 2)
        result = source_transfer(conv_net(), loader(*retired), loader(*self.kept), loader(*self.held_out), [0, 1, 2],
                                 max_items=40)
        self.assertEqual((result["forget_items"], result["held_out_items"]), (40, 40))


class TestTransferInTheRegime(unittest.TestCase):
    """The partial target of a retired scanner unlike the kept one is scaled by the transfer ratio."""

    def setUp(self):
        torch.set_num_threads(1)
        net = conv_net()
        x = torch.cat([blob_images(150, False, 0)[0], blob_images(150, True, 2)[0]])
        y = torch.cat([blob_images(150, False, 0)[1], blob_images(150, True, 2)[1]])
        optimizer = torch.optim.Adam(net.parameters(), 0.02)
        for _ in range(150):  # the original sees both scanners
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
        self.net = net.eval()
        self.forget, self.remain = loader(*blob_images(150, True, 2)), loader(*blob_images(150, False, 0))
        self.val = loader(*blob_images(60, False, 1))

    def calibrate(self, **kwargs):
        score = lambda m: 0.0  # noqa: E731 (not called: only the target is looked at)
        handler, facts = regime_stop_handler("auto", self.net, self.net, self.forget, self.remain, self.val,
                                             "classification", None, "cpu", score, **kwargs)
        # a source unlike the kept ones is repaired at its target (the run goes on while retention comes back)
        self.assertEqual(handler.repair_at_target, bool((facts["calibration"].get("transfer") or {}).get("applies")))
        return facts

    def test_the_shared_labels_target_is_scaled_and_the_reason_is_given(self):
        plain, scaled = self.calibrate(transfer_check=False)["calibration"], self.calibrate()["calibration"]
        self.assertEqual(self.calibrate()["regime"]["regime"], "partial")
        self.assertNotIn("transfer", plain)
        transfer = scaled["transfer"]
        self.assertTrue(transfer["applies"])
        self.assertAlmostEqual(scaled["target"], plain["target"] * transfer["ratio"], places=6)
        self.assertLess(scaled["target"], plain["target"] - 0.1)
        self.assertTrue(any("does not carry over" in note for note in scaled["notes"]))

    def test_without_held_out_data_the_check_is_skipped(self):
        # the remain loader stands in for held-out data then: the probes were trained on it, the comparison is void
        _, facts = regime_stop_handler("auto", self.net, self.net, self.forget, self.remain, None, "classification",
                                       None, "cpu", lambda m: 0.0)
        self.assertNotIn("transfer", facts["calibration"])


if __name__ == "__main__":
    unittest.main()
