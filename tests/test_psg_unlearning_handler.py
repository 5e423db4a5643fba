from __future__ import annotations

import copy
import unittest

import torch
from ignite.engine import Events
from monai.engines import IterationEvents, SupervisedTrainer
from monai.utils.enums import CommonKeys as Keys
from parameterized import parameterized
from torch.utils.data import DataLoader, TensorDataset

from monai_unlearn.core import PSGConfig
from monai_unlearn.handlers import PSGUnlearningHandler
from monai_unlearn.metrics.evaluation import evaluate_unlearning
from tests.test_unlearning_trainer import make_trainer, toy_data, toy_loaders, trained_toy_net


def supervised(net, loader, max_epochs=1, lr=0.1, handlers=None, **kwargs) -> SupervisedTrainer:
    return SupervisedTrainer(
        device="cpu",
        max_epochs=max_epochs,
        train_data_loader=loader,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9),
        loss_function=torch.nn.CrossEntropyLoss(),
        train_handlers=handlers,
        **kwargs,
    )


class TestPSGUnlearningHandler(unittest.TestCase):
    def setUp(self):
        torch.set_num_threads(1)
        self.forget, self.remain, self.test = toy_loaders()

    @parameterized.expand(
        [
            ("hard_phi0", PSGConfig(eps=2.0, phi=0.0), 1, 0.0),
            ("noisy_schedule_soft", PSGConfig(eps=1.0, num_steps=3, gamma=0.5, seed=1, lam=0.3,
                                              lambda_schedule="linear", target="topk", top_k=2, phi=0.0), 2, 0.0),
            # with a remain term the trainer forwards forget and remain images in one batch and the handler in
            # two: equal in exact arithmetic for networks without batch statistics, so only up to rounding
            ("remain_ce", PSGConfig(eps=1.0, num_steps=2, phi=1.0), 2, 1e-5),
            ("remain_distill", PSGConfig(eps=1.0, phi=0.5, remain_loss="distill"), 2, 1e-5),
        ]
    )
    def test_same_weights_as_unlearning_trainer(self, _, config, epochs, atol):
        net_a, net_b = trained_toy_net(), trained_toy_net()
        handler = PSGUnlearningHandler(copy.deepcopy(config), remain_data_loader=self.remain)
        supervised(net_a, self.forget, max_epochs=epochs, handlers=[handler]).run()
        make_trainer(net_b, self.forget, self.remain, copy.deepcopy(config), max_epochs=epochs).run()
        self.assertEqual(handler.iteration, epochs * len(self.forget))
        for got, want in zip(net_a.parameters(), net_b.parameters()):
            if atol == 0.0:
                self.assertTrue(torch.equal(got, want))
            else:
                self.assertTrue(torch.allclose(got, want, atol=atol))
        self.assertFalse(torch.equal(next(net_a.parameters()), next(trained_toy_net().parameters())))

    def test_restores_originals_and_records_config(self):
        trainer = supervised(trained_toy_net(), self.forget)
        prepare, loss = trainer.prepare_batch, trainer.loss_function
        handler = PSGUnlearningHandler({"eps": 2.0, "phi": 1.0}, remain_data_loader=self.remain)
        handler.attach(trainer)
        handler.attach(trainer)  # idempotent
        wrapped = []
        trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: wrapped.append(e.prepare_batch is not prepare))
        trainer.run()
        self.assertEqual(wrapped, [True] * len(self.forget))
        self.assertIs(trainer.prepare_batch, prepare)
        self.assertIs(trainer.loss_function, loss)
        self.assertEqual(trainer.state.unlearning_config["eps"], 2.0)
        self.assertEqual(handler.iteration, len(self.forget))  # one search per iteration despite two attaches
        # a second run wraps again and continues against the original reference
        reference = handler.reference
        trainer.run()
        self.assertIs(handler.reference, reference)
        self.assertIs(trainer.prepare_batch, prepare)

    def test_labels_replaced_by_boundary_targets(self):
        trainer = supervised(trained_toy_net(), self.forget, decollate=False)
        PSGUnlearningHandler(PSGConfig(eps=3.0, value_range=None, phi=0.0)).attach(trainer)
        labels = []
        trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda e: labels.append(e.state.output[Keys.LABEL]))
        trainer.run()
        # every forget sample is class 1; across the boundary the reference predicts class 0
        self.assertTrue(all(torch.equal(label, torch.zeros(4, dtype=torch.long)) for label in labels))

    def test_a_withdrawn_class_is_never_a_target(self):
        # a search radius too small to cross: without withdrawn classes the labels stay 1, with class 1 withdrawn
        # the nearest class that stays (0, the toy's only other class) is the target
        for withdrawn, expected in ((None, 1), ([1], 0)):
            trainer = supervised(trained_toy_net(), self.forget, decollate=False)
            PSGUnlearningHandler(PSGConfig(eps=1e-6, value_range=None, phi=0.0),
                                 withdrawn_classes=withdrawn).attach(trainer)
            labels = []
            trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED,
                                      lambda e: labels.append(e.state.output[Keys.LABEL]))
            trainer.run()
            self.assertTrue(all(torch.equal(label, torch.full((4,), expected)) for label in labels), withdrawn)
        trainer = supervised(trained_toy_net(), self.forget, decollate=False)
        PSGUnlearningHandler(PSGConfig(phi=0.0), withdrawn_classes=[7]).attach(trainer)
        with self.assertRaisesRegex(ValueError, r"cannot forget class\(es\) \[7\]: the network outputs 2 classes"):
            trainer.run()

    def test_forget_accuracy_drops_and_remain_kept(self):
        net = trained_toy_net()
        handler = PSGUnlearningHandler(PSGConfig(eps=3.0, value_range=None, phi=1.0), remain_data_loader=self.remain)
        supervised(net, self.forget, max_epochs=5, handlers=[handler]).run()
        after = evaluate_unlearning(net, self.forget, self.remain)
        self.assertLessEqual(after["forget"]["accuracy"], 0.25)
        self.assertGreaterEqual(after["remain"]["accuracy"], 0.99)

    def test_bad_labels_raise_and_restore(self):
        image, _ = toy_data(8)
        bad = DataLoader(TensorDataset(image, torch.full((8,), 3)), batch_size=4)
        trainer = supervised(trained_toy_net(), bad)
        prepare, loss = trainer.prepare_batch, trainer.loss_function
        PSGUnlearningHandler(PSGConfig(phi=0.0)).attach(trainer)
        with self.assertRaisesRegex(ValueError, "forget labels range from 3 to 3"):
            trainer.run()
        self.assertIs(trainer.prepare_batch, prepare)
        self.assertIs(trainer.loss_function, loss)

    def test_tuple_form_kept(self):
        def four(batchdata, device=None, non_blocking=False, **kwargs):
            return batchdata[0].to(device), batchdata[1].to(device), (), {}

        trainer = supervised(trained_toy_net(), self.forget, prepare_batch=four)
        handler = PSGUnlearningHandler(PSGConfig(phi=0.0))
        handler.attach(trainer)
        handler(trainer)  # installs the wrappers as on STARTED
        out = trainer.prepare_batch(next(iter(self.forget)), "cpu", False)
        self.assertEqual(len(out), 4)
        self.assertEqual(out[1].dtype, torch.long)
        trainer.run()
        self.assertIs(trainer.prepare_batch, four)

    def test_invalid(self):
        with self.assertRaisesRegex(ValueError, "remain_data_loader"):
            PSGUnlearningHandler(PSGConfig(phi=1.0))
        from ignite.engine import Engine

        engine = Engine(lambda e, b: None)
        PSGUnlearningHandler(PSGConfig(phi=0.0)).attach(engine)
        with self.assertRaisesRegex(TypeError, "SupervisedTrainer-like"):
            engine.run([1, 2])
        handler = PSGUnlearningHandler(PSGConfig(phi=0.0))
        handler.attach(supervised(trained_toy_net(), self.forget))
        with self.assertRaisesRegex(RuntimeError, "another engine"):
            handler.attach(supervised(trained_toy_net(), self.forget))


if __name__ == "__main__":
    unittest.main()
