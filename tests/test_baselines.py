"""The baseline unlearning methods behind ``run_method``: each does what its paper says, on a toy problem."""

from __future__ import annotations

import copy
import unittest

import torch
from parameterized import parameterized
from torch.utils.data import DataLoader, TensorDataset

from monai_unlearn import PSGConfig
from monai_unlearn.baselines import (
    METHODS,
    cf_k,
    eu_k,
    finetune,
    l1_sparse,
    last_k_blocks,
    model_blocks,
    neggrad_plus,
    reinitialize,
    run_method,
    saliency_mask,
    salun,
    scrub,
    teacher_student_kl,
)
from monai_unlearn.runner import UnlearningResult

FORGET = 0


def toy_net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU()),
        torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU()),
        torch.nn.Linear(16, 3),
    )


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def acc(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


class ToyCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        g = torch.Generator().manual_seed(0)
        centres = torch.tensor([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
        y = torch.arange(3).repeat_interleave(80)
        x = centres[y] + 0.8 * torch.randn(len(y), 2, generator=g)
        cls.x, cls.y = x, y
        f = y == FORGET
        cls.xf, cls.yf, cls.xr, cls.yr = x[f], y[f], x[~f], y[~f]
        torch.manual_seed(0)
        cls.model = toy_net()
        opt = torch.optim.Adam(cls.model.parameters(), 0.02)
        for _ in range(60):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(cls.model(x), y).backward()
            opt.step()
        cls.model.eval()

    def loaders(self, bs: int = 32):
        g = torch.Generator().manual_seed(0)
        forget = DataLoader(TensorDataset(self.xf, self.yf), bs, shuffle=True, generator=g)
        remain = DataLoader(TensorDataset(self.xr, self.yr), bs, shuffle=True, generator=g)
        return forget, remain


class TestRegistry(ToyCase):
    def test_original_is_accurate(self):
        self.assertGreater(acc(self.model, self.x, self.y), 0.95)

    @parameterized.expand([(k,) for k in METHODS])
    def test_every_method_runs_on_a_copy(self, key):
        forget, remain = self.loaders()
        before = state(self.model)
        kwargs = {"eps": 0.5} if key in ("psg", "boundary_shrink") else {}
        revised, result = run_method(key, self.model, forget, remain, epochs=1, lr=0.01, test_loader=remain,
                                     num_classes=3, **kwargs)
        self.assertIsInstance(result, UnlearningResult)
        self.assertEqual(result.method, METHODS[key].name)
        self.assertIsNot(revised, self.model)
        self.assertGreater(result.iterations, 0)
        self.assertGreaterEqual(result.time_s, 0.0)
        self.assertIsNotNone(result.after)
        for k, v in before.items():
            self.assertTrue(torch.equal(v, self.model.state_dict()[k]), f"{key} modified the original's {k}")

    def test_names_and_errors(self):
        forget, remain = self.loaders()
        with self.assertRaisesRegex(ValueError, "unknown unlearning method"):
            run_method("nope", self.model, forget, remain)
        with self.assertRaisesRegex(ValueError, "needs a remain_loader"):
            run_method("scrub", self.model, forget, None)
        with self.assertRaisesRegex(ValueError, "Boundary Shrink has no parameters"):
            run_method("Boundary Shrink", self.model, forget, None, gamma=0.5)
        _, result = run_method("NegGrad+", self.model, forget, remain, epochs=1, evaluate=False)
        self.assertEqual(result.method, "NegGrad+")
        self.assertEqual(result.config["beta"], 0.99)

    def test_boundary_shrink_and_psg_use_unlearn(self):
        forget, _ = self.loaders()
        _, result = run_method("boundary_shrink", self.model, forget, None, epochs=1, eps=0.5, evaluate=False)
        self.assertEqual(result.config, PSGConfig.boundary_shrink(eps=0.5).to_dict())
        config = PSGConfig(eps=0.5, num_steps=2, gamma=0.3, phi=0.0, seed=0)
        _, result = run_method("psg", self.model, forget, None, epochs=1, config=config, evaluate=False)
        self.assertEqual(result.method, "PSG")
        self.assertEqual(result.config["num_steps"], 2)


class TestRetrainFinetune(ToyCase):
    def test_retrain_never_sees_the_forgotten_class(self):
        _, remain = self.loaders()
        model, result = run_method("retrain", self.model, None, remain, epochs=30, lr=0.02, optimizer="adam",
                                   evaluate=False)
        self.assertLess(acc(model, self.xf, self.yf), 0.05)
        self.assertGreater(acc(model, self.xr, self.yr), 0.95)
        # a fresh initialisation, not the original's weights
        self.assertEqual(result.config["seed"], 0)


class TestNegGradPlus(ToyCase):
    def test_lowers_forget_accuracy_and_keeps_remain(self):
        forget, remain = self.loaders()
        model = copy.deepcopy(self.model)
        self.assertGreater(acc(model, self.xf, self.yf), 0.9)
        model, its, history, params = neggrad_plus(model, forget, remain, 5, 0.05, torch.device("cpu"), beta=0.8)
        self.assertLess(acc(model, self.xf, self.yf), 0.3)
        self.assertGreater(acc(model, self.xr, self.yr), 0.95)
        self.assertEqual(its, 5 * len(remain))
        self.assertGreater(history[-1]["forget_loss"], history[0]["forget_loss"])

    def test_bad_beta(self):
        forget, remain = self.loaders()
        with self.assertRaisesRegex(ValueError, "beta"):
            neggrad_plus(copy.deepcopy(self.model), forget, remain, 1, 0.01, torch.device("cpu"), beta=1.5)


class TestSalUn(ToyCase):
    def test_changes_only_salient_weights_and_forgets(self):
        forget, remain = self.loaders()
        model = copy.deepcopy(self.model)
        mask = saliency_mask(model, forget, torch.device("cpu"), keep=0.3)
        share = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
        self.assertAlmostEqual(share, 0.3, delta=0.02)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        model, its, history, params = salun(model, forget, remain, 6, 0.05, torch.device("cpu"), keep=0.3,
                                            num_classes=3, seed=1)
        for name, p in model.named_parameters():
            unchanged = before[name][~mask[name]]
            self.assertTrue(torch.equal(p.detach()[~mask[name]], unchanged), f"{name} changed outside the mask")
        self.assertLess(acc(model, self.xf, self.yf), 0.3)  # relabelled at random: the class is no longer given
        self.assertGreater(acc(model, self.xr, self.yr), 0.9)
        self.assertEqual(its, 6 * len(remain))
        self.assertAlmostEqual(params["mask_share"], share)

    def test_bad_keep(self):
        forget, _ = self.loaders()
        with self.assertRaisesRegex(ValueError, "keep"):
            saliency_mask(self.model, forget, torch.device("cpu"), keep=0.0)


class TestL1Sparse(ToyCase):
    def test_penalty_decays_and_sparsifies(self):
        _, remain = self.loaders()
        l1 = lambda m: float(sum(p.abs().sum() for p in m.parameters()))  # noqa: E731
        plain, *_ = finetune(copy.deepcopy(self.model), None, remain, 4, 0.01, torch.device("cpu"))
        sparse, its, history, params = l1_sparse(copy.deepcopy(self.model), None, remain, 4, 0.01,
                                                 torch.device("cpu"), alpha=0.01)
        self.assertLess(l1(sparse), l1(plain))
        self.assertEqual([h["alpha"] for h in history], [0.01, 0.0075, 0.005, 0.0025])
        self.assertGreater(acc(sparse, self.xr, self.yr), 0.9)
        with self.assertRaisesRegex(ValueError, "alpha"):
            l1_sparse(copy.deepcopy(self.model), None, remain, 1, 0.01, torch.device("cpu"), alpha=-1.0)


class TestLastK(ToyCase):
    def test_blocks(self):
        names = [n for n, _ in model_blocks(self.model)]
        self.assertEqual(names, ["0", "1", "2"])
        self.assertEqual([n for n, _ in last_k_blocks(self.model, 2)], ["1", "2"])
        self.assertEqual([n for n, _ in model_blocks(self.model, ["0.0", "2"])], ["0.0", "2"])
        with self.assertRaisesRegex(ValueError, "between 1 and 3"):
            last_k_blocks(self.model, 4)
        with self.assertRaisesRegex(ValueError, "not found"):
            model_blocks(self.model, ["head"])

    @parameterized.expand([(1,), (2,)])
    def test_cf_k_freezes_everything_but_the_last_k(self, k):
        _, remain = self.loaders()
        model = copy.deepcopy(self.model)
        before = state(model)
        model, _, _, params = cf_k(model, None, remain, 2, 0.05, torch.device("cpu"), k=k)
        trained = tuple(f"{i}." for i in range(3 - k, 3))
        for name, value in model.state_dict().items():
            if name.startswith(trained):
                if value.is_floating_point():
                    self.assertFalse(torch.equal(value, before[name]), f"{name} should have been trained")
            else:
                # frozen: parameters and batch-norm running statistics bit-identical
                self.assertTrue(torch.equal(value, before[name]), f"{name} changed but is frozen")
        self.assertTrue(all(p.requires_grad for p in model.parameters()))  # restored afterwards
        self.assertEqual(params["blocks"], [str(i) for i in range(3 - k, 3)])

    def test_reinitialize_changes_exactly_the_chosen_blocks(self):
        model = copy.deepcopy(self.model)
        before = state(model)
        blocks = [m for _, m in last_k_blocks(model, 2)]
        self.assertEqual(reinitialize(blocks, seed=1), 2)
        for name, value in model.state_dict().items():
            changed = not torch.equal(value, before[name])
            self.assertEqual(changed, name.startswith(("1.", "2.")), name)

    def test_reinitialize_resets_batch_norm_statistics(self):
        model = copy.deepcopy(self.model)
        self.assertFalse(torch.equal(model[0][1].running_mean, torch.zeros(16)))
        reinitialize([model[0]], seed=0)
        self.assertTrue(torch.equal(model[0][1].running_mean, torch.zeros(16)))
        self.assertTrue(torch.equal(model[0][1].weight.detach(), torch.ones(16)))

    def test_eu_k_reinitialises_before_training(self):
        _, remain = self.loaders()
        model = copy.deepcopy(self.model)
        before = state(model)
        expected = copy.deepcopy(self.model)
        reinitialize([expected[1], expected[2]], seed=3)
        # learning rate 0: what is left is exactly the re-initialisation
        model, _, _, params = eu_k(model, None, remain, 1, 0.0, torch.device("cpu"), k=2, seed=3)
        for name, value in model.state_dict().items():
            if name.startswith(("1.", "2.")):
                self.assertFalse(torch.equal(value, before[name]), f"{name} was not re-initialised")
                self.assertTrue(torch.equal(value, expected.state_dict()[name]), name)
            else:
                self.assertTrue(torch.equal(value, before[name]), f"{name} is outside the last k blocks")
        self.assertEqual(params["reinitialized_modules"], 2)

    def test_eu_k_trains_the_new_blocks_to_the_remain_task(self):
        _, remain = self.loaders()
        model, *_ = eu_k(copy.deepcopy(self.model), None, remain, 20, 0.05, torch.device("cpu"), k=2)
        self.assertGreater(acc(model, self.xr, self.yr), 0.95)
        self.assertLess(acc(model, self.xf, self.yf), 0.2)


class TestSCRUB(ToyCase):
    def test_teacher_stays_frozen_and_separate(self):
        forget, remain = self.loaders()
        teacher = copy.deepcopy(self.model)
        teacher_before = state(teacher)
        student = copy.deepcopy(self.model)
        student, _, history, _ = scrub(student, forget, remain, 4, 0.05, torch.device("cpu"), msteps=2,
                                       teacher=teacher)
        for name, value in teacher.state_dict().items():
            self.assertTrue(torch.equal(value, teacher_before[name]), f"teacher's {name} moved")
        self.assertTrue(any(not torch.equal(v, teacher_before[k]) for k, v in student.state_dict().items()))
        self.assertFalse(teacher.training)
        with torch.no_grad():
            kl = teacher_student_kl(student(self.xf), teacher(self.xf), 4.0)
        self.assertGreater(float(kl), 0.01)
        self.assertIn("max_step_kl", history[0])
        self.assertNotIn("max_step_kl", history[3])

    def test_teacher_cannot_be_the_student(self):
        forget, remain = self.loaders()
        model = copy.deepcopy(self.model)
        with self.assertRaisesRegex(ValueError, "separate copy"):
            scrub(model, forget, remain, 1, 0.01, torch.device("cpu"), teacher=model)

    def test_default_teacher_is_a_frozen_copy(self):
        forget, remain = self.loaders()
        model = copy.deepcopy(self.model)
        original = state(model)
        # the default teacher is taken before any update: max-steps push the student away from it
        student, _, history, _ = scrub(model, forget, remain, 2, 0.05, torch.device("cpu"), msteps=1)
        self.assertGreater(history[0]["max_step_kl"], 0.0)
        self.assertFalse(all(torch.equal(v, original[k]) for k, v in student.state_dict().items()))

    def test_kl_is_zero_for_equal_logits(self):
        logits = torch.randn(5, 3)
        self.assertAlmostEqual(float(teacher_student_kl(logits, logits, 4.0)), 0.0, places=6)


if __name__ == "__main__":
    unittest.main()
