"""Batch-norm running statistics estimated again from kept data (``monai_unlearn.core.norm_stats``) and the checks
that use them (``CalibratedStopHandler(renormalize_fn=...)``, ``unlearn(remain_norm_stats=True)``, the bundle's
``unlearn_remain_norm_stats``)."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import unittest

import torch
from torch.utils.data import DataLoader, TensorDataset

from monai_unlearn import PSGConfig, unlearn
from monai_unlearn.core.norm_stats import has_running_stats, reestimate_running_stats
from monai_unlearn.engines import UnlearningTrainer
from monai_unlearn.handlers import CalibratedStopHandler
from tests.test_boundary_search import fit


def bn_classifier(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.BatchNorm2d(1), torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(6, 2))


def two_sources(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kept images (class = bright centre or not) and a retired source's: the same classes, ten times the intensity."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.3
    x[:, :, 2:6, 2:6] += y.view(-1, 1, 1, 1) * 1.5
    return x, y, x[: n // 2] * 10 + 5, y[: n // 2]


class TestReestimate(unittest.TestCase):
    def test_the_first_layers_mean_is_the_datas_and_nothing_else_changes(self):
        net = bn_classifier()
        x, _, _, _ = two_sources()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(7.0)
                m.running_var.fill_(9.0)
        weights = {k: v.clone() for k, v in net.named_parameters()}
        net.eval()
        used = reestimate_running_stats(net, (x[i:i + 16] for i in range(0, 64, 16)))
        self.assertEqual(used, 64)
        self.assertFalse(net.training)  # the mode is left as it was
        torch.testing.assert_close(net[0].running_mean, x.mean().view(1), atol=1e-5, rtol=0)
        self.assertLess(abs(float(net[0].running_var) - float(x.var())), 0.05)
        self.assertNotAlmostEqual(float(net[2].running_var.mean()), 9.0, places=2)
        self.assertEqual(net[0].momentum, 0.1)  # the layers' momentum is restored
        for k, v in net.named_parameters():
            self.assertTrue(torch.equal(v, weights[k]), k)

    def test_max_items_and_nothing_to_estimate(self):
        net = bn_classifier()
        x, _, _, _ = two_sources()
        self.assertEqual(reestimate_running_stats(net, (x[i:i + 16] for i in range(0, 64, 16)), max_items=20), 32)
        before = copy.deepcopy(net.state_dict())
        self.assertEqual(reestimate_running_stats(net, iter(())), 0)  # no batches: the statistics stay
        for k, v in net.state_dict().items():
            self.assertTrue(torch.equal(v, before[k]), k)
        plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
        self.assertFalse(has_running_stats(plain))
        self.assertFalse(has_running_stats(torch.nn.InstanceNorm2d(3)))  # no running statistics by default
        self.assertEqual(reestimate_running_stats(plain, [x]), 0)

    def test_statistics_of_half_forget_batches_lose_a_kept_class_and_the_kept_datas_restore_it(self):
        # the failure this module exists for, on a model trained on the kept source only: batches that are half a
        # retired source's images (brighter) move the running statistics, and eval-mode accuracy on the kept data falls
        x, y, xf, _ = two_sources()
        net = fit(bn_classifier(), x, y)
        net.eval()
        accuracy = lambda: float((net(x).argmax(1) == y).float().mean())  # noqa: E731
        with torch.no_grad():
            kept = accuracy()
            net.train()
            for _ in range(30):
                net(torch.cat([xf[:16], x[:16]]))
            net.eval()
            skewed = accuracy()
        self.assertGreater(kept, 0.95)
        self.assertLess(skewed, 0.8)
        reestimate_running_stats(net, [x[:32], x[32:]])
        with torch.no_grad():
            self.assertGreater(accuracy(), 0.95)


class TestRenormalizingCheck(unittest.TestCase):
    def run_checks(self, guards, renormalized_guard, **kwargs):
        torch.set_num_threads(1)
        net = bn_classifier()
        x, y, _, _ = two_sources(16)
        loader = DataLoader(TensorDataset(x, y), 8)
        state = {"renormalized": False, "guards": iter(guards)}

        def guard(_):
            return renormalized_guard if state.pop("renormalized", False) else next(state["guards"])

        def renormalize(_):
            state["renormalized"] = True

        handler = CalibratedStopHandler(lambda _: 0.9, target=0.5, guard_fn=guard, renormalize_fn=renormalize,
                                        **kwargs)
        trainer = UnlearningTrainer("cpu", 2, loader, net, torch.optim.SGD(net.parameters(), lr=0.01),
                                    config=PSGConfig(eps=0.3, phi=0.0), train_handlers=[handler], decollate=False)
        trainer.run()
        return handler.record["checks"]

    def test_only_a_check_whose_guard_fell_is_renormalized_and_checked_again(self):
        # start 0.9; pass 1 keeps it (0.89); pass 2 falls to 0.5, and with the kept data's statistics it is 0.9 again
        checks = self.run_checks([0.9, 0.89, 0.5], renormalized_guard=0.9)
        self.assertNotIn("renormalized", checks[0])
        self.assertTrue(checks[0]["admissible"])
        self.assertTrue(checks[1]["renormalized"])
        self.assertEqual(checks[1]["guard"], 0.9)
        self.assertTrue(checks[1]["admissible"])

    def test_a_guard_that_stays_fallen_stays_inadmissible(self):
        checks = self.run_checks([0.9, 0.5, 0.5], renormalized_guard=0.6)
        self.assertEqual([c.get("renormalized", False) for c in checks], [True, True])
        self.assertEqual([c["admissible"] for c in checks], [False, False])


class TestRemainNormStatsInUnlearn(unittest.TestCase):
    def test_off_by_default_and_said_when_on(self):
        torch.set_num_threads(1)
        x, y, xf, yf = two_sources()
        forget = DataLoader(TensorDataset(xf[:8], yf[:8]), 8)
        remain = DataLoader(TensorDataset(x[:48], y[:48]), 8)
        held_out = DataLoader(TensorDataset(x[48:], y[48:]), 8)
        for on in (False, True):
            _, result = unlearn(bn_classifier(), forget, remain, config=PSGConfig(eps=0.3, phi=1.0, seed=0), epochs=2,
                                val_loader=held_out, progress=False, evaluate=False, remain_norm_stats=on)
            said = result.stopping["norm_stats"]
            self.assertEqual(said is not None, on, said)


class TestBundleSetting(unittest.TestCase):
    def test_the_bundle_setting_reaches_the_check(self):
        from monai.networks.nets import Classifier

        from tests.bundle_fixtures import NETWORK_DEF, make_images, overlay_parser, write_json_zoo_bundle

        from monai_unlearn.bundle import unlearn_from_parser
        from monai_unlearn.bundle.settings import DEFAULT_SETTINGS

        self.assertIs(DEFAULT_SETTINGS["unlearn_remain_norm_stats"], False)
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp, True)
        zoo = write_json_zoo_bundle(os.path.join(tmp, "zoo"), make_images(os.path.join(tmp, "data")))
        # the wrapped bundle's network with batch norm instead of its instance norm (on the command line), and its
        # weights; untrained ones do here: the check is built from the setting whatever the model knows
        torch.manual_seed(0)
        net = Classifier(**{k: v for k, v in NETWORK_DEF.items() if k != "_target_"}, norm="batch")
        torch.save(net.state_dict(), os.path.join(zoo, "models", "model.pt"))
        summary = unlearn_from_parser(overlay_parser(
            zoo, forget="device=scanner_c", output_dir=os.path.join(tmp, "out"), unlearn_regime="auto",
            unlearn_epochs=2, unlearn_remain_norm_stats=True, **{"network_def#norm": "batch"}))
        self.assertIn("estimated again from remain data", summary["record"]["stopping"]["norm_stats"])


if __name__ == "__main__":
    unittest.main()
