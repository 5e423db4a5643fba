from __future__ import annotations

import os
import tempfile
import unittest

import torch

from monai_unlearn.core import PSGConfig
from monai_unlearn.handlers import ModelCompositionHandler
from tests.test_unlearning_trainer import make_trainer, toy_loaders, trained_toy_net


def head_prefix(net: torch.nn.Module) -> str:
    return [n for n, _ in net.named_parameters()][-1].rsplit(".", 1)[0] + "."


class TestModelCompositionHandler(unittest.TestCase):
    def setUp(self):
        torch.set_num_threads(1)

    def _run(self, handler_kwargs):
        net = trained_toy_net()
        forget, remain, _ = toy_loaders()
        trainer = make_trainer(net, forget, remain, PSGConfig(eps=0.3, phi=1.0))
        other = trained_toy_net(seed=1)
        handler = ModelCompositionHandler(other, **handler_kwargs)
        handler.attach(trainer)
        handler.attach(trainer)  # attaching twice composes once
        # what the network would be without the handler: run an identical trainer without it
        plain = make_trainer(trained_toy_net(), *toy_loaders()[:2], PSGConfig(eps=0.3, phi=1.0))
        plain.run()
        trainer.run()
        return net, plain.network, other

    def test_takes_the_head_of_the_other_model(self):
        net, unlearned, other = self._run({})
        prefix = head_prefix(net)
        for name, value in net.state_dict().items():
            source = other if name.startswith(prefix) else unlearned
            self.assertTrue(torch.equal(value, source.state_dict()[name]), name)

    def test_takes_the_features_and_refits_the_head(self):
        forget, remain, _ = toy_loaders()
        net, unlearned, other = self._run({"take": "features", "remain_data_loader": remain, "refit_epochs": 1,
                                           "refit_lr": 0.1})
        prefix = head_prefix(net)
        changed_head = False
        for name, value in net.state_dict().items():
            if name.startswith(prefix):
                changed_head |= not torch.equal(value, unlearned.state_dict()[name])
            else:
                self.assertTrue(torch.equal(value, other.state_dict()[name]), name)
        self.assertTrue(changed_head)

    def test_other_model_from_a_weights_file(self):
        other = trained_toy_net(seed=1)
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.pt")
            torch.save(other.state_dict(), path)
            net = trained_toy_net()
            forget, remain, _ = toy_loaders()
            trainer = make_trainer(net, forget, remain, PSGConfig(eps=0.3, phi=1.0))
            ModelCompositionHandler(path).attach(trainer)
            trainer.run()
        prefix = head_prefix(net)
        for name, value in net.state_dict().items():
            if name.startswith(prefix):
                self.assertTrue(torch.equal(value, other.state_dict()[name]), name)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "take"):
            ModelCompositionHandler(trained_toy_net(), take="body")
        with self.assertRaisesRegex(ValueError, "remain_data_loader"):
            ModelCompositionHandler(trained_toy_net(), refit_epochs=1)


if __name__ == "__main__":
    unittest.main()
