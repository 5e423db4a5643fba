"""The regime of a forget request, its retrain-free target, and the calibrated stop with rewind."""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import unittest

import torch
from ignite.engine import Events
from parameterized import parameterized
from torch.utils.data import DataLoader, TensorDataset

from monai_unlearn import PSGConfig, unlearn
from monai_unlearn.bundle import unlearn_from_parser
from monai_unlearn.core.regime import decide_regime
from monai_unlearn.engines import UnlearningTrainer
from monai_unlearn.handlers import CalibratedStopHandler
from monai_unlearn.metrics.calibration import calibration_target, target_margin
from tests.bundle_fixtures import make_images, overlay_parser, split, write_json_zoo_bundle
from tests.test_boundary_search import fit, tiny_classifier


class TestDecideRegime(unittest.TestCase):
    @parameterized.expand([
        ("class_withdrawn", [2, 2, 2], [0, 1, 0, 1], "class", [2], []),
        ("consent_subset", [1, 1], [0, 1, 1, 2], "partial", [], [1]),
        # one scanner of several is retired: its classes are still served by the others
        ("shared_source_device", [0, 1, 2, 2], [0, 1, 2, 0, 1], "partial", [], [0, 1, 2]),
        # the retired scanner was the only source of head CT (class 1)
        ("unique_source_device", [1, 1, 1], [0, 2, 3, 0], "class", [1], []),
        ("mixed", [1, 3], [0, 1, 2], "partial", [3], [1]),
    ])
    def test_classification(self, _, forget, remain, regime, withdrawn, shared):
        decision = decide_regime(forget, remain)
        self.assertEqual((decision.regime, decision.withdrawn_labels, decision.shared_labels),
                         (regime, withdrawn, shared))
        self.assertTrue(decision.reason)
        self.assertFalse(decision.requested)

    def test_segmentation(self):
        decision = decide_regime(task="segmentation", forget_classes=[2])
        self.assertEqual((decision.regime, decision.withdrawn_labels), ("segmentation_class", [2]))
        decision = decide_regime(task="segmentation")
        self.assertEqual((decision.regime, decision.withdrawn_labels), ("segmentation_cases", []))

    def test_the_user_overrides_within_the_task(self):
        decision = decide_regime([1], [0, 1], requested="class")
        self.assertEqual((decision.regime, decision.requested), ("class", True))
        self.assertIn("the data says", decision.reason)
        with self.assertRaisesRegex(ValueError, "for segmentation; this bundle is a classifier"):
            decide_regime([1], [0], requested="segmentation_cases")
        with self.assertRaisesRegex(ValueError, "for classification; this bundle is a segmenter"):
            decide_regime(task="segmentation", requested="partial")
        with self.assertRaisesRegex(ValueError, "unknown regime 'fast'"):
            decide_regime([1], [0], requested="fast")


class ConstantClassifier(torch.nn.Module):
    """Always predicts ``cls``: its accuracy on each label is known exactly."""

    def __init__(self, cls: int, classes: int = 4) -> None:
        super().__init__()
        self.cls, self.classes = cls, classes
        self.bias = torch.nn.Parameter(torch.zeros(classes))

    def forward(self, x):
        logits = torch.zeros(x.shape[0], self.classes)
        logits[:, self.cls] = 1.0
        return logits + self.bias


class TestCalibrationTarget(unittest.TestCase):
    def test_held_out_accuracy_per_label_weighted_by_the_forget_set(self):
        # held-out data: labels 1 (right for a model that always says 1) and 2 (always wrong)
        held_out = [(torch.zeros(4, 1), torch.tensor([1, 1, 2, 2]))]
        calibration = calibration_target(ConstantClassifier(1), held_out, forget_labels=[1, 1, 1, 2], withdrawn_labels=[])
        self.assertEqual(calibration["per_label"], {1: 1.0, 2: 0.0})
        self.assertAlmostEqual(calibration["target"], 0.75)  # three forget items of label 1, one of label 2
        self.assertEqual(calibration["held_out_items"], 4)
        # a withdrawn label has target 0; a label without held-out items takes the pooled accuracy (and says so)
        calibration = calibration_target(ConstantClassifier(1), held_out, forget_labels=[3, 1, 0], withdrawn_labels=[3])
        self.assertEqual(calibration["per_label"][3], 0.0)
        self.assertEqual(calibration["per_label"][0], 1.0)  # pooled over the shared labels held out (label 1)
        self.assertTrue(calibration["notes"])


    def test_the_margin_is_the_sampling_noise_of_forget_accuracy_and_target(self):
        # one label, target 0.5 from 100 held-out items, 100 forget items: two standard errors of the difference of two
        # proportions, 2 * sqrt(p (1 - p) (1/100 + 1/100)), p moved toward 1/2 by two hits and two misses (still 0.5)
        self.assertAlmostEqual(target_margin({1: 0.5}, [1] * 100, {1: (50, 100)}), 2 * (0.25 * 0.02) ** 0.5)
        # four times the items on both sides: half the margin
        self.assertAlmostEqual(target_margin({1: 0.5}, [1] * 400, {1: (200, 400)}), (0.25 * 0.02) ** 0.5)
        # a withdrawn label's target (0) is exact: it adds no error of its own, and its items dilute the others'
        mixed = target_margin({1: 0.5, 3: 0.0}, [1] * 100 + [3] * 100, {1: (50, 100)}, withdrawn_labels=[3])
        self.assertAlmostEqual(mixed, 2 * (0.25 * (100 / 200**2 + 0.25 / 100)) ** 0.5)
        self.assertEqual(target_margin({3: 0.0}, [3] * 10, {1: (5, 10)}, withdrawn_labels=[3]), 0.0)
        # a label without held-out items counts the items its pooled target came from
        self.assertAlmostEqual(target_margin({2: 0.5}, [2] * 100, {1: (50, 100)}), 2 * (0.25 * 0.02) ** 0.5)
        # right on all six held-out items is not certainty: p is taken as (6 + 2) / (6 + 4) = 0.8
        self.assertAlmostEqual(target_margin({1: 1.0}, [1] * 6, {1: (6, 6)}), 2 * (0.16 * (1 / 6 + 1 / 6)) ** 0.5)
        self.assertEqual(target_margin({}, [], {}), 0.0)
        # a margin wider than a tenth of accuracy is said (log and notes); a narrower one is not
        from monai_unlearn.handlers.calibrated_stop_handler import _say_if_margin_is_wide

        notes: list[str] = []
        _say_if_margin_is_wide(0.05, notes)
        self.assertEqual(notes, [])
        with self.assertLogs("monai_unlearn.handlers.calibrated_stop_handler", "WARNING"):
            _say_if_margin_is_wide(0.2, notes)
        self.assertIn("known only to within 0.200", notes[0])


def toy(seed: int = 0, n: int = 48):
    torch.manual_seed(seed)
    x = torch.rand(n, 1, 4, 4)
    y = (x.mean((1, 2, 3)) > 0.5).long() + 2 * (x[:, 0, 0, 0] > 0.5).long()  # four classes
    return x, y


class TestCalibratedStop(unittest.TestCase):
    def setUp(self):
        torch.set_num_threads(1)

    def make(self, score_values, guard_values=None, lr=0.1, epochs=4, **kwargs):
        net = tiny_classifier()
        x, y = toy()
        loader = DataLoader(TensorDataset(x[:8], y[:8] % 3), 4)
        scores, guards = iter(score_values), iter(guard_values or [])
        handler = CalibratedStopHandler(lambda _: next(scores), target=0.5,
                                        guard_fn=(lambda _: next(guards)) if guard_values else None, **kwargs)
        trainer = UnlearningTrainer("cpu", epochs, loader, net, torch.optim.SGD(net.parameters(), lr=lr),
                                    config=PSGConfig(eps=0.3, phi=0.0), train_handlers=[handler], decollate=False)
        return net, trainer, handler

    def test_stops_at_the_target(self):
        _, trainer, handler = self.make([0.9, 0.8, 0.5, 0.1, 0.1])  # start, then one score per pass
        trainer.run()
        self.assertEqual(trainer.state.epoch, 2)
        self.assertEqual(handler.record["stopped"], "target")
        self.assertFalse(handler.record["rewound"])  # the last state is the closest to the target

    def test_an_original_that_already_meets_the_target_takes_no_step(self):
        net, trainer, handler = self.make([0.45], guard_values=[0.9])
        before = copy.deepcopy(net.state_dict())
        trainer.run()
        self.assertEqual(trainer.state.iteration, 0)
        self.assertEqual((handler.record["stopped"], handler.record["reached_at"], handler.record["checks"]),
                         ("target_at_start", 0, []))
        self.assertFalse(handler.record["rewound"])  # the original is the state it stopped in, not one it went back to
        for name, value in before.items():
            self.assertTrue(torch.equal(value, net.state_dict()[name]), name)
        # without it, the same start takes a pass before the first check stops the run
        _, trainer, handler = self.make([0.45, 0.45], guard_values=[0.9, 0.9], stop_at_start=False)
        trainer.run()
        self.assertEqual((trainer.state.epoch, handler.record["stopped"]), (1, "target"))
        self.assertGreater(trainer.state.iteration, 0)
        # an original above the target starts as usual
        _, trainer, handler = self.make([0.9, 0.8, 0.5])
        trainer.run()
        self.assertEqual((trainer.state.epoch, handler.record["stopped"]), (2, "target"))

    def test_a_score_within_the_margin_meets_the_target(self):
        # target 0.5, margin 0.1: an original at 0.58 is the target's as far as the data can tell, and takes no step
        net, trainer, handler = self.make([0.58], guard_values=[0.9], mode="closest", margin=0.1)
        before = copy.deepcopy(net.state_dict())
        trainer.run()
        self.assertEqual((trainer.state.iteration, handler.record["stopped"], handler.record["margin"]),
                         (0, "target_at_start", 0.1))
        self.assertTrue(all(torch.equal(v, net.state_dict()[k]) for k, v in before.items()))
        # above the margin the run starts, and a check within it stops there (the tolerance alone would go on)
        _, trainer, handler = self.make([0.7, 0.59, 0.5], guard_values=[0.9, 0.9, 0.9], mode="closest", margin=0.1)
        trainer.run()
        self.assertEqual((trainer.state.epoch, handler.record["stopped"]), (1, "target"))
        _, trainer, handler = self.make([0.7, 0.59, 0.5], guard_values=[0.9, 0.9, 0.9], mode="closest")
        trainer.run()
        self.assertEqual((trainer.state.epoch, handler.record["stopped"]), (2, "target"))
        with self.assertRaisesRegex(ValueError, "margin"):
            CalibratedStopHandler(lambda _: 0.0, target=0.5, margin=-0.1)

    def test_a_withdrawn_class_keeps_the_state_that_forgot_it(self):
        # in "reach" mode meeting the target is required: a state that meets it is kept even if the guard fell
        _, trainer, handler = self.make([0.9, 0.8, 0.4], guard_values=[0.9, 0.89, 0.5], mode="reach")
        trainer.run()
        self.assertEqual((trainer.state.epoch, handler.record["stopped"], handler.record["rewound"]), (2, "target", False))
        # in "closest" mode the same run stops at the target too, and returns to pass 1, the admissible state
        # nearest the target
        _, trainer, handler = self.make([0.9, 0.8, 0.4], guard_values=[0.9, 0.89, 0.5], mode="closest")
        trainer.run()
        self.assertEqual((trainer.state.epoch, handler.record["stopped"]), (2, "target"))
        self.assertEqual((handler.record["best_iteration"], handler.record["rewound"]), (2, True))

    def test_a_partial_run_at_the_target_goes_on_while_retention_is_repaired(self):
        # pass 2 meets the target but loses held-out accuracy (a retired source unlike the kept ones is forgotten
        # together with what resembles it); passes 3-4 stay at the target while the guard comes back: pass 4 is
        # admissible at the target, the run stops there and keeps it
        scores, guards = [0.9, 0.7, 0.45, 0.4, 0.48, 0.5], [0.9, 0.89, 0.5, 0.7, 0.89, 0.9]
        _, trainer, handler = self.make(scores, guard_values=guards, mode="closest", stall_limit=2, epochs=6,
                                        repair_at_target=True)
        trainer.run()
        self.assertEqual((trainer.state.epoch, handler.record["stopped"]), (4, "target"))
        self.assertEqual((handler.record["best_iteration"], handler.record["rewound"]), (8, False))
        # without repair_at_target (any request but a source unlike the kept ones) the target stops the run at
        # pass 2, which returns to pass 1; with it, a guard that does not come back ends the run as no progress
        _, trainer, handler = self.make(scores, guard_values=guards, mode="closest", stall_limit=2, epochs=6)
        trainer.run()
        self.assertEqual((trainer.state.epoch, handler.record["stopped"]), (2, "target"))
        self.assertEqual((handler.record["best_iteration"], handler.record["rewound"]), (2, True))
        _, trainer, handler = self.make([0.9, 0.7, 0.45, 0.45, 0.45], guard_values=[0.9, 0.89, 0.5, 0.45, 0.4],
                                        mode="closest", stall_limit=2, epochs=6, repair_at_target=True)
        trainer.run()
        self.assertEqual((trainer.state.epoch, handler.record["stopped"]), (4, "no_progress"))
        self.assertEqual((handler.record["best_iteration"], handler.record["rewound"]), (2, True))

    def test_after_the_target_a_withdrawn_class_run_repairs_retention_while_it_can(self):
        # the target is met at pass 1; passes 2-3 raise the guard, pass 4 does not: stop there, keep pass 3
        scores, guards = [0.9, 0.4, 0.3, 0.3, 0.3, 0.3], [0.9, 0.8, 0.85, 0.88, 0.87, 0.86]
        _, trainer, handler = self.make(scores, guard_values=guards, mode="reach", patience=1, epochs=6)
        trainer.run()
        self.assertEqual(trainer.state.epoch, 4)
        self.assertEqual((handler.record["reached_at"], handler.record["best_iteration"]), (2, 6))
        self.assertTrue(handler.record["rewound"])

    def test_a_withdrawn_class_run_goes_on_while_retention_is_still_below_the_original(self):
        # the target is met at pass 1, but no state gets the guard back within 0.02 of the original's 0.9: patience
        # does not run out, the run repairs to its budget and keeps the reached state with the best guard
        scores, guards = [0.9, 0.4, 0.3, 0.3, 0.3, 0.3, 0.3], [0.9, 0.7, 0.75, 0.74, 0.73, 0.72, 0.71]
        _, trainer, handler = self.make(scores, guard_values=guards, mode="reach", patience=1, epochs=6)
        trainer.run()
        self.assertEqual(trainer.state.epoch, 6)
        self.assertEqual(handler.record["best_iteration"], 4)  # pass 2 (two iterations a pass)

    def test_a_withdrawn_class_run_stops_at_the_first_state_that_forgot_it_and_kept_retention(self):
        # the regime's default (patience 0, repair_at_target): pass 1 forgets the class but loses held-out accuracy,
        # pass 2 repairs it to within 0.02 of the original's 0.9: stop there, although pass 3 would raise the guard
        # further (training the kept classes beyond what a model retrained without the class reaches)
        scores, guards = [0.9, 0.4, 0.3, 0.3, 0.3], [0.9, 0.7, 0.89, 0.95, 0.96]
        _, trainer, handler = self.make(scores, guard_values=guards, mode="reach", repair_at_target=True, epochs=4)
        trainer.run()
        self.assertEqual(trainer.state.epoch, 2)
        self.assertEqual((handler.record["stopped"], handler.record["reached_at"]), ("target", 2))
        self.assertEqual((handler.record["best_iteration"], handler.record["rewound"]), (4, False))
        # without repair_at_target the first state that forgot the class stops the run, damaged or not
        _, trainer, handler = self.make(scores, guard_values=guards, mode="reach", epochs=4)
        trainer.run()
        self.assertEqual((trainer.state.epoch, handler.record["best_iteration"]), (1, 2))
        # a repair that never comes runs to the budget and keeps the reached state with the best guard
        _, trainer, handler = self.make([0.9, 0.4, 0.3, 0.3, 0.3], guard_values=[0.9, 0.7, 0.8, 0.75, 0.6],
                                        mode="reach", repair_at_target=True, epochs=4)
        trainer.run()
        self.assertEqual((trainer.state.epoch, handler.record["best_iteration"], handler.record["rewound"]),
                         (4, 4, True))

    def test_a_withdrawn_class_run_finishes_a_repair_that_is_still_under_way(self):
        # pass 2 forgets the class admissibly (0.885, within 0.02 of the original's 0.9) while the guard is still
        # rising from pass 1's 0.7: with finish_repair one more check; pass 3 brings the guard back to 0.9 and stops
        scores, guards = [0.9, 0.4, 0.3, 0.3, 0.3], [0.9, 0.7, 0.885, 0.9, 0.91]
        _, trainer, handler = self.make(scores, guard_values=guards, mode="reach", repair_at_target=True, epochs=4,
                                        finish_repair=True)
        trainer.run()
        self.assertEqual(trainer.state.epoch, 3)
        self.assertEqual((handler.record["best_iteration"], handler.record["rewound"]), (6, False))
        self.assertEqual([c.get("repairing", False) for c in handler.record["checks"]], [False, True, False])
        # a next check whose guard falls again stops the run and returns to the better state before it
        _, trainer, handler = self.make(scores, guard_values=[0.9, 0.7, 0.885, 0.88, 0.9], mode="reach",
                                        repair_at_target=True, epochs=4, finish_repair=True)
        trainer.run()
        self.assertEqual(trainer.state.epoch, 3)
        self.assertEqual((handler.record["best_iteration"], handler.record["rewound"]), (4, True))
        # without it (the handler's default) the first admissible state stops the run
        _, trainer, handler = self.make(scores, guard_values=guards, mode="reach", repair_at_target=True, epochs=4)
        trainer.run()
        self.assertEqual((trainer.state.epoch, handler.record["best_iteration"]), (2, 4))

    def test_a_partial_run_that_stops_coming_closer_ends_early_and_rewinds(self):
        # target 0.5: pass 1 comes closer (0.7), passes 2-3 drift away; with stall_limit 2 the run ends at pass 3
        # instead of using its budget of 6, and returns to pass 1
        _, trainer, handler = self.make([0.9, 0.7, 0.8, 0.85, 0.6, 0.5, 0.5], mode="closest", stall_limit=2, epochs=6)
        trainer.run()
        self.assertEqual(trainer.state.epoch, 3)
        self.assertEqual(handler.record["stopped"], "no_progress")
        self.assertEqual((handler.record["best_iteration"], handler.record["rewound"]), (2, True))

    def test_creeping_closer_by_less_than_the_tolerance_is_not_progress(self):
        # target 0.5, tolerance 0.01: each pass comes 0.003 closer, never 0.01 beyond the last real progress, so
        # with stall_limit 3 the run ends at pass 3 (not at its budget of 6) and keeps pass 3, the closest state
        _, trainer, handler = self.make([0.9, 0.897, 0.894, 0.891, 0.888, 0.885, 0.882], mode="closest",
                                        stall_limit=3, epochs=6)
        trainer.run()
        self.assertEqual((trainer.state.epoch, handler.record["stopped"]), (3, "no_progress"))
        self.assertEqual((handler.record["best_iteration"], handler.record["rewound"]), (trainer.state.iteration, False))
        # steps of 0.05 are progress: the same run goes on to its target
        _, trainer, handler = self.make([0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6], mode="closest", stall_limit=3, epochs=6)
        trainer.run()
        self.assertEqual((trainer.state.epoch, handler.record["stopped"]), (6, "budget"))
        # progress is counted from the last real step: 0.004 + 0.004 + 0.004 add up to more than the tolerance
        _, trainer, handler = self.make([0.9, 0.896, 0.892, 0.888, 0.884, 0.88, 0.876], mode="closest",
                                        stall_limit=3, epochs=6)
        trainer.run()
        self.assertEqual((trainer.state.epoch, handler.record["stopped"]), (6, "budget"))

    def test_a_run_that_damages_retention_rewinds_to_the_best_state(self):
        net, trainer, handler = self.make([0.9, 0.8, 0.7, 0.6, 0.6], guard_values=[0.9, 0.89, 0.5, 0.4, 0.3],
                                          epochs=4, lr=0.5)
        after_first = {}
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: after_first.setdefault(
            "w", copy.deepcopy(net.state_dict())) if e.state.epoch == 1 else None)
        trainer.run()
        # passes 2-4 brought the score closer to the target but lost held-out accuracy: pass 1 is the best state
        self.assertTrue(handler.record["rewound"])
        self.assertEqual(handler.record["best_iteration"], 2)
        for name, value in after_first["w"].items():
            self.assertTrue(torch.equal(net.state_dict()[name], value), name)


class TestRegimeInUnlearn(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(1)
        x, y = toy(n=96)
        cls.x, cls.y = x, y % 3
        cls.net = fit(tiny_classifier(), cls.x[:72], cls.y[:72], steps=150)

    def loaders(self, forget_mask):
        train_x, train_y = self.x[:72], self.y[:72]
        forget = DataLoader(TensorDataset(train_x[forget_mask], train_y[forget_mask]), 8)
        remain = DataLoader(TensorDataset(train_x[~forget_mask], train_y[~forget_mask]), 8)
        return forget, remain, DataLoader(TensorDataset(self.x[72:], self.y[72:]), 8)

    def test_only_a_withdrawn_class_finishes_a_repair_under_way(self):
        from monai_unlearn.handlers import regime_stop_handler

        for forget_mask, regime, finish in ((self.y[:72] == 2, "class", True),
                                            (torch.arange(72) % 5 == 0, "partial", False)):
            forget, remain, held_out = self.loaders(forget_mask)
            handler, record = regime_stop_handler("auto", self.net, copy.deepcopy(self.net), forget, remain, held_out,
                                                  "classification", None, "cpu", lambda _: 0.0, transfer_check=False)
            self.assertEqual((record["regime"]["regime"], handler.finish_repair), (regime, finish))
            # a partial run that stops coming closer ends after three checks; a withdrawn class has no such end
            self.assertEqual(handler.stall_limit, 0 if regime == "class" else 3)

    def test_withdrawn_class_stops_when_it_is_gone(self):
        forget, remain, held_out = self.loaders(self.y[:72] == 2)
        revised, result = unlearn(self.net, forget, remain, config=PSGConfig(eps=1.0, phi=1.0, seed=0), epochs=30,
                                  lr=0.05, regime="auto", val_loader=held_out, progress=False)
        stopping = result.stopping
        self.assertEqual(stopping["regime"]["regime"], "class")
        self.assertEqual(stopping["calibration"]["target"], 0.0)
        self.assertEqual(stopping["stopped"], "target")
        self.assertLess(result.epochs, 30)
        self.assertEqual(stopping["tolerance"], 0.0)  # a withdrawn class is gone only when no forget item gets it
        self.assertEqual(result.after["forget"]["accuracy"], 0.0)

    def test_boundary_targets_never_take_a_withdrawn_class(self):
        # a search radius too small to cross the boundary: the paper's targets keep the true label (no flip), the
        # default's regime gives the nearest class that stays instead
        forget, remain, held_out = self.loaders(self.y[:72] == 2)
        seen = {}

        def record_targets(engine):
            seen.setdefault(engine.state.epoch, []).append(engine.state.output["boundary_target"].clone())

        for regime in ("fixed", "auto"):
            revised = copy.deepcopy(self.net)
            stop = None
            if regime == "auto":
                from monai_unlearn.core.boundary_search import frozen_reference
                from monai_unlearn.handlers import regime_stop_handler
                from monai_unlearn.metrics.headline import forget_scorer

                stop, _ = regime_stop_handler("auto", frozen_reference(revised), revised, forget, remain, held_out,
                                              "classification", None, "cpu", forget_scorer("classification", forget))
                self.assertEqual(stop.withdrawn_classes, [2])
            trainer = UnlearningTrainer("cpu", 1, forget, revised, torch.optim.SGD(revised.parameters(), lr=0.0),
                                        config=PSGConfig(eps=1e-6, phi=0.0), decollate=False,
                                        withdrawn_classes=None if stop is None else stop.withdrawn_classes)
            seen.clear()
            trainer.add_event_handler(Events.ITERATION_COMPLETED, record_targets)
            trainer.run()
            targets = torch.cat(seen[1])
            if regime == "fixed":
                self.assertTrue((targets == 2).all())  # nothing crossed: every target is the forgotten label
            else:
                self.assertFalse((targets == 2).any())
                self.assertTrue(((targets >= 0) & (targets < 4)).all())
        _, result = unlearn(self.net, forget, remain, val_loader=held_out, epochs=2, evaluate=False, progress=False)
        self.assertEqual(result.stopping["withdrawn_targets"], [2])
        # the default revises the classifier's head alone for a withdrawn class, and says so (and whether it gave up)
        self.assertEqual(result.stopping["head_only"]["name"], "3")
        self.assertEqual(result.stopping["head_only"]["given_up"],
                         any(c.get("head_given_up") for c in result.stopping["checks"]))
        mask = torch.zeros(72, dtype=torch.bool)
        mask[:6] = True  # labels that stay: nothing is withdrawn
        forget, remain, held_out = self.loaders(mask)
        _, result = unlearn(self.net, forget, remain, val_loader=held_out, epochs=1, evaluate=False, progress=False)
        self.assertEqual(result.stopping["withdrawn_targets"], [])
        self.assertIsNone(result.stopping["head_only"])

    def test_handlers_on_a_hand_built_engine_give_the_default_run(self):
        # a user who assembles the engine and handlers themselves gets the same default as unlearn(): the package
        # PSG parameters, the auto regime from regime_stop_handler and the same weights
        from monai_unlearn.core.boundary_search import frozen_reference
        from monai_unlearn.handlers import UnlearningHistoryHandler, regime_stop_handler
        from monai_unlearn.metrics.headline import forget_scorer

        forget, remain, held_out = self.loaders(self.y[:72] == 2)
        torch.manual_seed(0)
        expected, result = unlearn(self.net, forget, remain, val_loader=held_out, lr=0.05, evaluate=False,
                                   progress=False)
        revised = copy.deepcopy(self.net)
        reference = frozen_reference(revised)
        stop, record = regime_stop_handler("auto", reference, revised, forget, remain, held_out, "classification",
                                           None, "cpu", forget_scorer("classification", forget, device="cpu"))
        trainer = UnlearningTrainer(device="cpu", max_epochs=15, forget_data_loader=forget, network=revised,
                                    optimizer=torch.optim.SGD(revised.parameters(), lr=0.05, momentum=0.9),
                                    config=PSGConfig.package_default(), remain_data_loader=remain,
                                    reference=reference, decollate=False, withdrawn_classes=stop.withdrawn_classes,
                                    train_handlers=[UnlearningHistoryHandler(), stop])
        torch.manual_seed(0)
        trainer.run()
        self.assertEqual(record["regime"], result.stopping["regime"])
        self.assertEqual(stop.record["checks"], result.stopping["checks"])
        for name, value in expected.state_dict().items():
            self.assertTrue(torch.equal(value, revised.state_dict()[name]), name)

    def test_forget_items_already_like_held_out_data_leave_the_model_unchanged(self):
        # forgetting items the original never trained on (here: the held-out items themselves): it already scores on
        # them what it scores on held-out data, so the default takes no step and returns the original's weights
        held_out_x, held_out_y = self.x[72:], self.y[72:]
        forget = DataLoader(TensorDataset(held_out_x, held_out_y), 8)
        remain = DataLoader(TensorDataset(self.x[:72], self.y[:72]), 8)
        revised, result = unlearn(self.net, forget, remain, config=PSGConfig(eps=1.0, phi=1.0, seed=0), epochs=5,
                                  lr=0.05, val_loader=DataLoader(TensorDataset(held_out_x, held_out_y), 8),
                                  evaluate=False, progress=False)
        self.assertEqual(result.stopping["regime"]["regime"], "partial")
        self.assertEqual(result.stopping["stopped"], "target_at_start")
        self.assertEqual(result.epochs, 0)
        # the target's sampling noise on these few items is part of the record
        calibration = result.stopping["calibration"]
        labels = self.y[72:].tolist()
        counts = {c: (labels.count(c) * calibration["per_label"][c], labels.count(c)) for c in set(labels)}
        self.assertAlmostEqual(calibration["margin"], target_margin(calibration["per_label"], labels, counts))
        self.assertGreater(calibration["margin"], 0.1)
        for name, value in self.net.state_dict().items():
            self.assertTrue(torch.equal(value, revised.state_dict()[name]), name)

    def test_margin_z_sets_how_sure_the_stop_must_be(self):
        # a fifth of the training items: recognised at 1.0 against a held-out target of about 0.75, but on 15 forget
        # and 24 held-out items; the default (two standard errors) cannot tell that apart and takes no step, and
        # margin_z=0 (the tolerance alone) revises the model
        forget, remain, held_out = self.loaders(torch.arange(72) % 5 == 0)
        runs = {}
        for z in (2.0, 0.0):
            _, runs[z] = unlearn(self.net, forget, remain, config=PSGConfig(eps=1.0, phi=1.0, seed=0), epochs=5,
                                 lr=0.05, val_loader=held_out, evaluate=False, progress=False, margin_z=z)
        self.assertEqual((runs[2.0].stopping["stopped"], runs[2.0].epochs), ("target_at_start", 0))
        self.assertGreater(runs[2.0].stopping["calibration"]["margin"], 0.25)
        self.assertEqual(runs[0.0].stopping["calibration"]["margin"], 0.0)
        self.assertGreater(runs[0.0].epochs, 0)
        with self.assertRaisesRegex(ValueError, "margin_z"):
            unlearn(self.net, forget, remain, val_loader=held_out, evaluate=False, progress=False, margin_z=-1.0)

    def test_a_guard_too_small_for_its_bound_is_said_once(self):
        # 24 held-out items, 16 or so of the kept labels: one item moves the guard by more than the 0.02 it bounds
        forget, remain, held_out = self.loaders(self.y[:72] == 2)
        with self.assertLogs("monai_unlearn.handlers.calibrated_stop_handler", level="WARNING") as logs:
            _, result = unlearn(self.net, forget, remain, config=PSGConfig(eps=1.0, phi=1.0, seed=0), epochs=3,
                                lr=0.05, val_loader=held_out, evaluate=False, progress=False)
        said = [note for note in result.stopping["calibration"]["notes"] if note.startswith("the retention guard")]
        self.assertEqual(len(said), 1, result.stopping["calibration"]["notes"])  # once, though every check runs it
        kept = int((self.y[72:] != 2).sum())
        self.assertIn(f"has {kept} held-out item(s) of the kept labels", said[0])
        self.assertTrue(any("retention guard" in line for line in logs.output))
        self.assertGreater(len(result.stopping["checks"]), 0)
        # with 300 held-out items the guard resolves the bound: nothing is said
        x, y = toy(seed=5, n=300)
        large = DataLoader(TensorDataset(x, y % 3), 32)
        _, result = unlearn(self.net, forget, remain, config=PSGConfig(eps=1.0, phi=1.0, seed=0), epochs=1,
                            lr=0.05, val_loader=large, evaluate=False, progress=False)
        self.assertFalse(any("retention guard" in n for n in result.stopping["calibration"]["notes"]))

    def test_the_original_is_evaluated_on_held_out_data_once(self):
        # a partial request: the target and the guard's start come from one evaluation of the original
        from unittest import mock

        from monai_unlearn.handlers import calibrated_stop_handler as module

        mask = torch.zeros(72, dtype=torch.bool)
        mask[:6] = True
        forget, remain, held_out = self.loaders(mask)
        calls = []
        real = module.per_label_accuracy

        def counted(net, *args, **kwargs):
            calls.append(net)
            return real(net, *args, **kwargs)

        from monai_unlearn.metrics import calibration

        with mock.patch.object(module, "per_label_accuracy", counted), \
                mock.patch.object(calibration, "per_label_accuracy", counted):
            handler, record = module.regime_stop_handler("auto", self.net, copy.deepcopy(self.net), forget, remain,
                                                         held_out, "classification", None, "cpu", lambda _: 1.0,
                                                         transfer_check=False)
        self.assertEqual(record["regime"]["regime"], "partial")
        self.assertEqual(calls, [self.net])
        self.assertEqual(handler.original_guard, handler.guard_fn(self.net))  # what the start would have evaluated

    def test_partial_without_held_out_data_says_the_target_is_optimistic(self):
        mask = torch.zeros(72, dtype=torch.bool)
        mask[:6] = True  # a few items of several classes: their labels stay
        forget, remain, _ = self.loaders(mask)
        with self.assertLogs("monai_unlearn.handlers.calibrated_stop_handler", level="WARNING") as logs:
            _, result = unlearn(self.net, forget, remain, config=PSGConfig(eps=1.0, phi=1.0, seed=0), epochs=3,
                                lr=0.01, regime="auto", evaluate=False, progress=False)
        self.assertIn("optimistic", logs.output[0])
        self.assertEqual(result.stopping["regime"]["regime"], "partial")
        self.assertTrue(any("optimistic" in note for note in result.stopping["calibration"]["notes"]))

    def test_a_manual_target_overrides_the_default_regime_but_not_a_named_one(self):
        forget, remain, _ = self.loaders(self.y[:72] == 2)
        with self.assertRaisesRegex(ValueError, "regime or stop_at_forget_accuracy"):
            unlearn(self.net, forget, remain, regime="class", stop_at_forget_accuracy=0.1, progress=False)
        _, result = unlearn(self.net, forget, remain, stop_at_forget_accuracy=1.0, evaluate=False, progress=False)
        self.assertIsNone(result.stopping)  # the user's target, not a regime, stopped the run
        self.assertEqual(result.epochs, 1)

    def test_default_is_auto_and_fixed_runs_every_pass(self):
        forget, remain, held_out = self.loaders(self.y[:72] == 2)
        _, auto = unlearn(self.net, forget, remain, val_loader=held_out, epochs=4, evaluate=False, progress=False)
        self.assertEqual(auto.stopping["regime"]["regime"], "class")
        _, fixed = unlearn(self.net, forget, remain, regime="fixed", epochs=4, evaluate=False, progress=False)
        self.assertIsNone(fixed.stopping)
        self.assertEqual(fixed.epochs, 4)
        with self.assertRaisesRegex(ValueError, "unknown regime 'sometimes'"):
            unlearn(self.net, forget, remain, regime="sometimes", progress=False)

    def test_no_remain_data_falls_back_to_fixed_passes(self):
        forget, _, _ = self.loaders(self.y[:72] == 2)
        with self.assertLogs("monai_unlearn.core.regime", level="INFO") as logs:
            _, result = unlearn(self.net, forget, None, config=PSGConfig(eps=1.0, phi=0.0), epochs=2, evaluate=False,
                                progress=False)
        self.assertIn("fixed number of passes", logs.output[0])
        self.assertIsNone(result.stopping)
        self.assertEqual(result.epochs, 2)


class TestBundleRegime(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        torch.set_num_threads(1)
        cls.tmp = tempfile.mkdtemp()
        cls.items = make_images(os.path.join(cls.tmp, "data"))
        cls.zoo = write_json_zoo_bundle(os.path.join(cls.tmp, "zoo"), cls.items)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_calibrated_on_the_wrapped_bundles_validation_data(self):
        out = os.path.join(self.tmp, "out_partial")
        summary = unlearn_from_parser(overlay_parser(self.zoo, forget="device=scanner_c", output_dir=out,
                                                     unlearn_regime="auto", unlearn_epochs=6, unlearn_lr=0.003))
        stopping = summary["record"]["stopping"]
        self.assertEqual(stopping["regime"]["regime"], "partial")  # scanner_c's classes are served by a and b
        self.assertEqual(stopping["held_out"], "validation data at 'validate#dataset#data'")
        _, val = split(self.items)
        self.assertEqual(stopping["calibration"]["held_out_items"], len(val))
        # the partial target's sampling margin is in the report: wide, with six validation items per class, and said
        self.assertGreater(stopping["calibration"]["margin"], 0.1)
        self.assertTrue(any("known only to within" in note for note in stopping["calibration"]["notes"]))
        # --unlearn_margin_z 0: the tolerance alone
        strict = unlearn_from_parser(overlay_parser(self.zoo, forget="device=scanner_c", output_dir=out + "_strict",
                                                    unlearn_regime="auto", unlearn_epochs=1, unlearn_margin_z=0))
        self.assertEqual(strict["record"]["stopping"]["calibration"]["margin"], 0.0)
        with self.assertRaisesRegex(ValueError, "unlearn_margin_z must be a number"):
            unlearn_from_parser(overlay_parser(self.zoo, forget="device=scanner_c", output_dir=out + "_bad",
                                               unlearn_regime="auto", unlearn_epochs=1, unlearn_margin_z="two"))
        self.assertFalse(os.path.exists(out + "_bad"))  # nothing written
        # the transfer check compared scanner_c's items with the validation items of their labels
        transfer = stopping["calibration"]["transfer"]
        self.assertGreater(transfer["held_out_items"], 0)
        self.assertGreater(transfer["forget_items"], 0)
        self.assertIn(stopping["stopped"], ("target", "budget", "no_progress", "target_at_start"))
        self.assertEqual(summary["record"]["epochs"], len(summary["record"]["history"]))

    def test_a_named_regime_and_a_manual_target_exclude_each_other(self):
        with self.assertRaisesRegex(ValueError, "unlearn_regime or unlearn_stop_at_forget_accuracy"):
            unlearn_from_parser(overlay_parser(self.zoo, forget="label=2", output_dir=os.path.join(self.tmp, "both"),
                                               unlearn_regime="partial", unlearn_stop_at_forget_accuracy=0.1))

    def test_withdrawn_class_regime(self):
        # no unlearn_regime given: the bundle's default is "auto", as in Python
        summary = unlearn_from_parser(overlay_parser(self.zoo, forget="label=2", output_dir=os.path.join(
            self.tmp, "out_class"), default_regime=True, unlearn_epochs=15))
        record = summary["record"]
        self.assertEqual(record["stopping"]["regime"]["regime"], "class")
        self.assertEqual(record["stopping"]["calibration"]["target"], 0.0)
        self.assertEqual(record["stopping"]["stopped"], "target")
        self.assertLess(record["epochs"], 15)  # stopped when the class was gone, not after a fixed count
        self.assertLessEqual(record["after"]["forget"]["accuracy"], 0.01)
        self.assertEqual(record["stopping"]["withdrawn_targets"], [2])  # the trainer got them from the regime
        # the log's decision is in the audit record and the audit report a reviewer signs
        audit = json.load(open(os.path.join(self.tmp, "out_class", "unlearning", "audit.json")))
        self.assertEqual(audit["parameters"]["regime"]["decision"]["regime"], "class")
        markdown = open(os.path.join(self.tmp, "out_class", "unlearning", "report.md")).read()
        self.assertIn("**Regime:** class (no kept item has label(s) [2]", markdown)
        self.assertIn("no forgotten item was relabelled with a withdrawn label ([2])", markdown)
        # the bundle's default revises the classifier's head first (unlearn_params#withdrawn_scope) and says how it went
        head = record["stopping"]["head_only"]
        self.assertEqual(record["config"]["withdrawn_scope"], "head")
        self.assertTrue(head["name"])
        self.assertIn("went back to the original and revised the whole network" if head["given_up"] else
                      f"only the classification head (`{head['name']}`) was revised", markdown)

    def test_fixed_regime_runs_every_pass(self):
        summary = unlearn_from_parser(overlay_parser(self.zoo, forget="label=2", output_dir=os.path.join(
            self.tmp, "out_fixed"), unlearn_regime="fixed", unlearn_epochs=3))
        self.assertIsNone(summary["record"]["stopping"])
        self.assertEqual(summary["record"]["epochs"], 3)



class TestDefaults(unittest.TestCase):
    def test_python_and_bundle_share_the_default_parameters(self):
        from monai_unlearn.bundle.settings import DEFAULT_SETTINGS, psg_config
        from monai_unlearn.core.config import DEFAULT_EPOCHS, DEFAULT_LR, PACKAGE_DEFAULT_PARAMS

        self.assertEqual(psg_config(), PSGConfig.package_default())
        self.assertEqual(DEFAULT_SETTINGS["unlearn_params"], PACKAGE_DEFAULT_PARAMS)
        self.assertEqual((DEFAULT_SETTINGS["unlearn_epochs"], DEFAULT_SETTINGS["unlearn_lr"]), (DEFAULT_EPOCHS, DEFAULT_LR))
        self.assertEqual(DEFAULT_SETTINGS["unlearn_regime"], "auto")
        from monai_unlearn.metrics.calibration import MARGIN_Z

        self.assertEqual(DEFAULT_SETTINGS["unlearn_margin_z"], MARGIN_Z)

    def test_distributed_runs_take_fixed_passes_for_now(self):
        from monai_unlearn.core.regime import resolve_regime

        with self.assertLogs("monai_unlearn.core.regime", level="WARNING") as logs:
            self.assertIsNone(resolve_regime("auto", distributed=True))
        self.assertIn("torch.distributed", logs.output[0])
        with self.assertRaisesRegex(ValueError, "not supported under torch.distributed"):
            resolve_regime("partial", distributed=True)
        self.assertIsNone(resolve_regime("fixed", distributed=True))
        self.assertEqual(resolve_regime("auto"), "auto")

    def test_long_passes_are_checked_several_times(self):
        from monai_unlearn.handlers.calibrated_stop_handler import default_check_interval

        self.assertIsNone(default_check_interval(list(range(16))))  # once a pass
        self.assertEqual(default_check_interval(list(range(17))), 5)  # four checks a pass, the last at its end
        self.assertEqual(default_check_interval(list(range(40))), 10)
        self.assertIsNone(default_check_interval(iter(range(100))))  # no length: once a pass


if __name__ == "__main__":
    unittest.main()
