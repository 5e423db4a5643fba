"""Revising only the classification head for a withdrawn class (``PSGConfig.withdrawn_scope``), and giving it up."""

from __future__ import annotations

import copy
import unittest

import torch
from monai.networks.nets import DenseNet121, UNet
from torch.utils.data import DataLoader, TensorDataset

from monai_unlearn.core import PSGConfig, PSGUnlearner
from monai_unlearn.core.head import _giving_output, classification_head, find_head, gradients_only_into
from monai_unlearn.engines import UnlearningTrainer
from monai_unlearn.handlers import CalibratedStopHandler


def batch_norm_classifier(seed: int = 0) -> torch.nn.Module:
    """Conv, batch norm (with running statistics), dropout, and a linear head over three classes."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Dropout(0.5),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))


def batches(seed: int = 0, n: int = 8):
    generator = torch.Generator().manual_seed(seed)
    forget = torch.rand(n, 1, 6, 6, generator=generator), torch.full((n,), 2)
    remain = torch.rand(n, 1, 6, 6, generator=generator), torch.arange(n) % 2
    return forget, remain


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


class TestClassificationHead(unittest.TestCase):
    def test_the_head_model_composition_uses_else_the_last_module_with_parameters(self):
        self.assertEqual(classification_head(DenseNet121(2, 1, 3))[0], "class_layers")
        self.assertEqual(classification_head(batch_norm_classifier())[0], "6")
        bare = torch.nn.Linear(3, 2)
        self.assertIs(classification_head(bare)[1], bare)  # its parameters are its own: the network is the head
        with self.assertRaisesRegex(ValueError, "no parameters"):
            classification_head(torch.nn.ReLU())

    def test_gradients_reach_the_head_only_and_the_hook_is_removed(self):
        model = batch_norm_classifier()
        x = torch.rand(4, 1, 6, 6)
        with gradients_only_into(classification_head(model)[1]):
            model(x).sum().backward()
        self.assertIsNotNone(model[6].weight.grad)
        self.assertIsNone(model[0].weight.grad)
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()  # outside the block the whole network gets gradients again
        self.assertIsNotNone(model[0].weight.grad)


class OutputLayerRegisteredFirst(torch.nn.Module):
    """The classifier is registered before the body, so the last module with parameters is not the output layer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.out = torch.nn.Linear(4, 3)
        self.body = torch.nn.Linear(36, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.body(x.flatten(1))))


class TwoBranches(torch.nn.Module):
    """The output is the sum of two branches: no module smaller than the network gives it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Linear(36, 3), torch.nn.Linear(36, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x.flatten(1)) + self.b(x.flatten(1))


class TestHeadOnlySteps(unittest.TestCase):
    def setUp(self):
        torch.set_num_threads(1)

    def unlearner(self, config: PSGConfig, withdrawn=(2,), lr: float = 0.1, momentum: float = 0.0):
        model = batch_norm_classifier()
        return model, PSGUnlearner(model, torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum), config,
                                   withdrawn_classes=list(withdrawn) if withdrawn else None)

    def test_a_withdrawn_class_revises_the_head_alone_with_the_package_default(self):
        model, unlearner = self.unlearner(PSGConfig.package_default())
        before = state(model)
        (xf, yf), (xr, yr) = batches()
        out = unlearner.step(xf, yf, xr, yr)
        self.assertTrue(out["head_only"])
        after = model.state_dict()
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        # the head moved; the convolution, and the batch norm's weights *and running statistics*, are the original's
        self.assertEqual(changed, {"6.weight", "6.bias"})
        self.assertEqual(unlearner.head[0], "6")

    def test_the_whole_network_otherwise(self):
        (xf, yf), (xr, yr) = batches()
        for config, withdrawn in ((PSGConfig.package_default(withdrawn_scope="network"), (2,)),  # asked for
                                  (PSGConfig.package_default(), None)):  # a partial request: nothing withdrawn
            model, unlearner = self.unlearner(config, withdrawn)
            before = state(model)
            self.assertFalse(unlearner.step(xf, yf, xr, yr)["head_only"])
            self.assertFalse(torch.equal(before["0.weight"], model.state_dict()["0.weight"]))
            self.assertFalse(torch.equal(before["1.running_mean"], model.state_dict()["1.running_mean"]))

    def test_a_head_found_by_name_that_does_not_give_the_output_is_looked_for_by_running_the_network(self):
        odd = OutputLayerRegisteredFirst()
        (xf, yf), (xr, yr) = batches()
        self.assertEqual(classification_head(odd)[0], "body")  # registered last, but not the output layer
        self.assertFalse(_giving_output(odd, {"body": odd.body}, xf))
        self.assertEqual(find_head(odd, xf)[0], "out")
        before = state(odd)
        unlearner = PSGUnlearner(odd, torch.optim.SGD(odd.parameters(), lr=0.1), PSGConfig.package_default(),
                                 withdrawn_classes=[2])
        self.assertTrue(unlearner.step(xf, yf, xr, yr)["head_only"])
        self.assertEqual(unlearner.head[0], "out")
        self.assertTrue(torch.equal(before["body.weight"], odd.state_dict()["body.weight"]))
        self.assertFalse(torch.equal(before["out.weight"], odd.state_dict()["out.weight"]))

    def test_a_network_without_a_head_is_revised_whole_and_says_so(self):
        two = TwoBranches()
        (xf, yf), (xr, yr) = batches()
        self.assertIsNone(find_head(two, xf))
        before = state(two)
        unlearner = PSGUnlearner(two, torch.optim.SGD(two.parameters(), lr=0.1), PSGConfig.package_default(),
                                 withdrawn_classes=[2])
        with self.assertLogs("monai_unlearn.core.unlearner", level="WARNING") as logs:
            self.assertFalse(unlearner.step(xf, yf, xr, yr)["head_only"])
        self.assertIn("no module smaller than the network gives its output", logs.output[0])
        for name in ("a.weight", "b.weight"):
            self.assertFalse(torch.equal(before[name], two.state_dict()[name]), name)

    def test_a_withdrawn_segmentation_class_revises_the_deepest_module_giving_the_output(self):
        # MONAI's UNet with residual units: its last module with parameters is a convolution inside the last residual
        # unit, whose output the unit adds its input to; the unit itself gives the network's output
        torch.manual_seed(0)
        unet = UNet(2, 1, 3, channels=(4, 8), strides=(2,), num_res_units=1)
        image = torch.rand(2, 1, 8, 8)
        label = torch.randint(0, 3, (2, 1, 8, 8))
        name, _ = find_head(unet, image)
        self.assertFalse(_giving_output(unet, {"head": classification_head(unet)[1]}, image))
        self.assertTrue(_giving_output(unet, {"head": unet.get_submodule(name)}, image))
        before = state(unet)
        unlearner = PSGUnlearner(unet, torch.optim.SGD(unet.parameters(), lr=0.1), PSGConfig.package_default(),
                                 withdrawn_classes=[2])
        out = unlearner.step(image, label, image, label, forget_mask=label[:, 0] == 2)
        self.assertTrue(out["head_only"])
        changed = {k.rsplit(".", 1)[0] for k in before if not torch.equal(before[k], unet.state_dict()[k])}
        self.assertTrue(changed and all(k.startswith(name + ".") or k == name for k in changed), (name, changed))
        # given up, the head found by running the network (not the one found by name) is put back: the original again
        self.assertTrue(unlearner.revise_whole_network())
        for key, value in unet.state_dict().items():
            self.assertTrue(torch.equal(value, before[key]), key)

    def test_the_heads_steps_take_the_scaled_learning_rate_and_leave_the_optimizer_as_it_was(self):
        (xf, yf), (xr, yr) = batches()
        moves = {}
        for scale in (1.0, 10.0):
            model, unlearner = self.unlearner(PSGConfig.package_default(head_lr_scale=scale), lr=0.01)
            before = model[6].weight.detach().clone()
            unlearner.step(xf, yf, xr, yr)
            moves[scale] = (model[6].weight.detach() - before).abs().sum().item()
            self.assertEqual(unlearner.optimizer.param_groups[0]["lr"], 0.01)
        self.assertAlmostEqual(moves[10.0] / moves[1.0], 10.0, places=3)  # plain SGD: the step is linear in lr

    def test_head_phi_weighs_the_remain_term_of_the_heads_steps(self):
        (xf, yf), (xr, yr) = batches()
        losses = {}
        for head_phi in (0.0, 1.0, None):
            _, unlearner = self.unlearner(PSGConfig.package_default(head_phi=head_phi))
            out = unlearner.compute_losses(xf, yf, xr, yr)
            losses[head_phi] = (out["loss"] - out["forget_loss"]).item(), out["remain_loss"].item()
        self.assertAlmostEqual(losses[0.0][0], 0.0, places=5)
        self.assertAlmostEqual(losses[1.0][0], losses[1.0][1], places=5)
        self.assertAlmostEqual(losses[None][0], 4.0 * losses[None][1], places=4)  # None: phi (4 in the default)
        with self.assertRaisesRegex(ValueError, "head_phi"):
            PSGConfig(head_phi=-1.0)
        with self.assertRaisesRegex(ValueError, "withdrawn_scope"):
            PSGConfig(withdrawn_scope="last_layer")

    def test_giving_up_the_head_returns_to_the_original_and_revises_everything_after(self):
        model, unlearner = self.unlearner(PSGConfig.package_default(), momentum=0.9)
        original = state(model)
        (xf, yf), (xr, yr) = batches()
        for _ in range(2):
            unlearner.step(xf, yf, xr, yr)
        self.assertTrue(unlearner.optimizer.state[model[6].weight])  # a momentum buffer
        self.assertTrue(unlearner.revise_whole_network())
        for name, value in model.state_dict().items():
            self.assertTrue(torch.equal(value, original[name]), name)
        self.assertFalse(unlearner.optimizer.state.get(model[6].weight))
        self.assertFalse(unlearner.revise_whole_network())  # once only
        self.assertFalse(unlearner.step(xf, yf, xr, yr)["head_only"])
        self.assertFalse(torch.equal(model.state_dict()["0.weight"], original["0.weight"]))
        # a run that never revised the head alone has nothing to give up
        _, network_run = self.unlearner(PSGConfig.package_default(withdrawn_scope="network"))
        self.assertFalse(network_run.revise_whole_network())


class TestGivingUpInTheCalibratedStop(unittest.TestCase):
    def run_with_guards(self, guards, scores, **kwargs):
        torch.set_num_threads(1)
        model = batch_norm_classifier()
        original = state(model)
        (xf, yf), (xr, yr) = batches(n=8)
        forget, remain = DataLoader(TensorDataset(xf, yf), 4), DataLoader(TensorDataset(xr, yr), 4)
        guard_values, score_values = iter(guards), iter(scores)
        seen = []

        def guard(net):  # records whether the checked network is the original (nothing revised but the head)
            seen.append(all(torch.equal(v, original[k]) for k, v in net.state_dict().items()))
            return next(guard_values)

        handler = CalibratedStopHandler(lambda _: next(score_values), target=0.0, guard_fn=guard, tolerance=0.0,
                                        mode="reach", repair_at_target=True, withdrawn_classes=[2], **kwargs)
        trainer = UnlearningTrainer("cpu", 4, forget, model, torch.optim.SGD(model.parameters(), lr=0.1),
                                    config=PSGConfig.package_default(), remain_data_loader=remain,
                                    withdrawn_classes=handler.withdrawn_classes, train_handlers=[handler],
                                    decollate=False)
        trainer.run()
        return trainer, handler, model, original, seen

    def test_a_head_that_loses_retention_is_given_up_for_the_whole_network(self):
        # start (guard 0.9), pass 1 with the head alone: the class is gone but the guard fell to 0.5 -> give up; the
        # check after is the original again; passes 2 and 3 (the whole network) reach the target with retention
        trainer, handler, model, original, _ = self.run_with_guards([0.9, 0.5, 0.9, 0.9], [0.8, 0.0, 0.0, 0.0])
        checks = handler.record["checks"]
        self.assertTrue(checks[0]["head_given_up"])
        self.assertNotEqual(handler.record["best_iteration"], checks[0]["iteration"])  # never a best state
        self.assertTrue(trainer.unlearner.head_given_up)
        self.assertEqual(trainer.state.epoch, 2)  # stopped at the first admissible state after the switch
        self.assertFalse(torch.equal(model.state_dict()["0.weight"], original["0.weight"]))

    def test_a_check_within_the_first_pass_does_not_give_the_head_up(self):
        # a pass of two iterations checked after each: the first check sees the passing damage of the head's first
        # steps (0.5) and is judged like any other; at the end of the pass retention is back and the head stays
        trainer, handler, *_ = self.run_with_guards([0.9, 0.5, 0.9], [0.8, 0.0, 0.0], interval=1, epoch_level=False)
        self.assertFalse(trainer.unlearner.head_given_up)
        self.assertEqual([c.get("head_given_up", False) for c in handler.record["checks"]], [False, False])
        self.assertEqual(handler.record["best_iteration"], 2)
        # still fallen at the end of the pass: given up there
        trainer, handler, *_ = self.run_with_guards([0.9, 0.5, 0.6, 0.9, 0.9], [0.8, 0.0, 0.0, 0.0, 0.0], interval=1,
                                                    epoch_level=False)
        self.assertTrue(trainer.unlearner.head_given_up)
        self.assertEqual([c.get("head_given_up", False) for c in handler.record["checks"]][:2], [False, True])

    def test_a_head_that_keeps_retention_stays_the_only_part_revised(self):
        trainer, handler, model, original, seen = self.run_with_guards([0.9, 0.9], [0.8, 0.0])
        self.assertEqual(trainer.state.epoch, 1)
        self.assertFalse(trainer.unlearner.head_given_up)
        self.assertNotIn("head_given_up", handler.record["checks"][0])
        for name, value in model.state_dict().items():
            if not name.startswith("6."):
                self.assertTrue(torch.equal(value, original[name]), name)
        self.assertEqual(seen, [True, False])  # the start saw the original, the check a revised head


if __name__ == "__main__":
    unittest.main()
