from __future__ import annotations

import unittest

import torch
from monai.networks.nets import DenseNet
from parameterized import parameterized
from torch.utils.data import DataLoader, TensorDataset

from monai_unlearn.core.composition import compose_models, compose_state_dicts, finetune_on_remain, head_prefixes_for


def densenet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return DenseNet(spatial_dims=2, in_channels=1, out_channels=3, init_features=4, growth_rate=4, block_config=(1, 1), bn_size=2)


class TestComposition(unittest.TestCase):
    def test_head_from_one_features_from_the_other(self):
        a, b = densenet(0), densenet(1)
        composed = compose_models(a, b)
        for name, value in composed.state_dict().items():
            source = b if name.startswith("class_layers.") else a
            self.assertTrue(torch.equal(value, source.state_dict()[name]), name)
        self.assertIsNot(composed, a)
        self.assertTrue(torch.equal(a.state_dict()["class_layers.out.weight"], densenet(0).state_dict()["class_layers.out.weight"]))

    @parameterized.expand([("explicit", ("2.",)), ("detected", None)])
    def test_plain_sequential(self, _, prefixes):
        torch.manual_seed(0)
        a = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
        b = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
        composed = compose_models(a, b, prefixes)
        self.assertTrue(torch.equal(composed[0].weight, a[0].weight))
        self.assertTrue(torch.equal(composed[2].weight, b[2].weight))
        self.assertEqual(head_prefixes_for(a), ("2.",))

    def test_architecture_mismatch(self):
        with self.assertRaisesRegex(ValueError, "share an architecture"):
            compose_state_dicts(torch.nn.Linear(2, 3).state_dict(), torch.nn.Linear(3, 3).state_dict() | {"x": torch.ones(1)}, ("weight",))
        with self.assertRaisesRegex(ValueError, "differs in shape"):
            compose_state_dicts(torch.nn.Linear(2, 3).state_dict(), torch.nn.Linear(3, 3).state_dict(), ("bias",))
        with self.assertRaisesRegex(ValueError, "no parameter starts with"):
            compose_models(densenet(0), densenet(1), ("head.",))

    def test_finetune_head_only_keeps_features(self):
        model = compose_models(densenet(0), densenet(1))
        before = {k: v.clone() for k, v in model.state_dict().items()}
        loader = DataLoader(TensorDataset(torch.rand(8, 1, 16, 16), torch.randint(0, 3, (8,))), batch_size=4)
        finetune_on_remain(model, loader, epochs=2, lr=0.1, head_only=True)
        for name, value in model.state_dict().items():
            changed = not torch.equal(value, before[name])
            self.assertEqual(changed, name.startswith("class_layers.out"), name)
        self.assertTrue(all(p.requires_grad for p in model.parameters()))


if __name__ == "__main__":
    unittest.main()
