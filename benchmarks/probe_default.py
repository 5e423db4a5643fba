"""Probe the default on one scenario and seed of the scenario benchmark, on its cached models, and print every check.

    python benchmarks/probe_default.py fmnist_class0 0                        # the shipped default
    python benchmarks/probe_default.py fmnist_class0 0 '{"lr": 0.003}'       # unlearn() arguments
    python benchmarks/probe_default.py fmnist_class0 0 '{"psg": {"remain_loss": "distill"}}'   # PSGConfig fields
    python benchmarks/probe_default.py slices_cranium 0 --variant remain_boost
    python benchmarks/probe_default.py seg_scanner_b 0 --variant crossed_only
    python benchmarks/probe_default.py slices_cranium 0 --trace              # score every checked state too
    python benchmarks/probe_default.py slices_cranium 1 --variant bn_check   # own vs kept data's BN statistics
    python benchmarks/probe_default.py fmnist_class0 1 --fmnist-train 20000 --fmnist-epochs 15 --trace
    python benchmarks/probe_default.py slices_cranium 2 --variant withdrawn_term_only
    python benchmarks/probe_default.py brain_mni152 0 --profile             # where the run's time goes (cProfile)

For trying a change to the default before building it: the variants are the ones ``RESULTS_SCENARIOS.md`` lists as
tried and not kept. ``remain_boost`` doubles the remain weight (phi) at every check whose held-out guard fell more
than the bound, up to four times the default, and restores it at the first admissible check. ``crossed_only`` gives
the forget term only to items whose boundary search crossed (the others are left out instead of being taught their
own label again); withdrawn classes are unaffected (every target there crosses). ``bn_check`` (a diagnostic that leaves
the run as it is), ``renormalize_every_check`` and ``remain_normalised``: batch-norm statistics, see their docstrings
and ``RESULTS_SCENARIOS.md``. ``withdrawn_term_only``: a withdrawn class's forget term is the withdrawn-probability
term alone (``PSGConfig.withdrawn_weight``), without the cross-entropy to the boundary targets. ``bn_frozen`` (every
step in eval mode) and ``remain_stats`` (running statistics from the remain rows alone): batch norm on the brain
patches, see their docstrings. The models come from
the benchmark's cache (``python benchmarks/scenarios.py`` trains them); the retrained model only scores. ``--trace`` also scores the
state at every check against the retrained model (forget / remain / test / MIA and the gap), to see where the ideal
stop would have been; the time it prints then includes that scoring.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scenarios as S  # noqa: E402
from _common import loader  # noqa: E402

from monai_unlearn import unlearn  # noqa: E402
from monai_unlearn.core import unlearner as unlearner_module  # noqa: E402
from monai_unlearn.core.norm_stats import reestimate_running_stats  # noqa: E402
from monai_unlearn.handlers import calibrated_stop_handler as stop_module  # noqa: E402


def remain_boost(data: dict, cap: float = 4.0) -> None:
    """Raise phi x2 at each check that lost retention (up to ``cap`` times the run's phi), restore it when kept."""
    check = stop_module.CalibratedStopHandler.__call__

    def boosted(self, engine):
        check(self, engine)
        config = engine.unlearner.config
        base = self.__dict__.setdefault("_probe_phi", config.phi)
        lost = not self.record["checks"][-1]["admissible"]
        config.phi = min(config.phi * 2, base * cap) if lost else base

    stop_module.CalibratedStopHandler.__call__ = boosted


def crossed_only(data: dict) -> None:
    """Leave items whose search did not cross out of the forget term (mean over the whole batch)."""
    targets = unlearner_module.boundary_targets

    def crossed(logits, mode, temperature, top_k, label_index, mask, excluded):
        target = targets(logits, mode, temperature, top_k, label_index, mask, excluded)
        if excluded is not None and excluded.numel():
            return target
        return torch.where(target == label_index, torch.full_like(target, -100), target)

    def loss(logits, target):
        return F.cross_entropy(logits.float(), target, reduction="sum", ignore_index=-100) / target.numel()

    unlearner_module.boundary_targets, unlearner_module.forget_loss = crossed, loss


def trace_checks(score, reference: dict, traced: list[dict]) -> None:
    """Score the revised network at every check of the calibrated stop (appends to ``traced``)."""
    check = stop_module.CalibratedStopHandler.__call__

    def scored(self, engine):
        check(self, engine)
        net = self._net(engine)
        was_training = net.training
        row = score(net)
        net.train(was_training)
        traced.append({"iteration": engine.state.iteration, "gap": S.average_gap(row, reference),
                       "row": {k: round(v, 3) for k, v in row.items() if v is not None}})

    stop_module.CalibratedStopHandler.__call__ = scored


def _remain_batches(data: dict):
    """The remain images in shuffled batches of the scenario's size (a fresh order at each call)."""
    return (images for images, _ in loader(data["remain"], data["batch_size"], True))


def bn_check(data: dict) -> None:
    """Print, at every check, the kept training and held-out accuracy of the state with its own batch-norm statistics
    and of a copy whose statistics are estimated again from remain data (the run itself is not changed)."""
    check = stop_module.CalibratedStopHandler.__call__
    (xr, yr), (xv, yv) = data["remain"].tensors, data["val"].tensors

    def accuracy(net, x, y):
        net.eval()
        with torch.no_grad():
            return float((net(x).argmax(1) == y).float().mean())

    def checked(self, engine):
        check(self, engine)
        net = self._net(engine)
        was_training = net.training
        copy_ = copy.deepcopy(net)
        reestimate_running_stats(copy_, _remain_batches(data))
        print(f"  iteration {engine.state.iteration}: kept training {accuracy(net, xr, yr):.3f} -> "
              f"{accuracy(copy_, xr, yr):.3f}, held-out {accuracy(net, xv, yv):.3f} -> {accuracy(copy_, xv, yv):.3f} "
              "(own statistics -> estimated again from remain data)")
        net.train(was_training)

    stop_module.CalibratedStopHandler.__call__ = checked


def renormalize_every_check(data: dict) -> None:
    """Estimate batch-norm statistics again from remain data before every check, not only those whose guard fell."""
    check = stop_module.CalibratedStopHandler.__call__

    def checked(self, engine):
        reestimate_running_stats(self._net(engine), _remain_batches(data))
        check(self, engine)

    stop_module.CalibratedStopHandler.__call__ = checked


def remain_normalised(data: dict) -> None:
    """In training, normalise every row of an unlearning batch with the remain rows' batch statistics (which alone
    update the running statistics), so that forget rows are trained as a model of the kept data would see them."""
    compute = unlearner_module.PSGUnlearner.compute_losses

    def forward_of(m, start):
        def forward(x):
            rows = x[start:]
            dims = [0, *range(2, x.dim())]
            mean, var = rows.mean(dims), rows.var(dims, unbiased=False)
            shape = [1, -1] + [1] * (x.dim() - 2)
            y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + m.eps)
            if m.affine:
                y = y * m.weight.view(shape) + m.bias.view(shape)
            with torch.no_grad():
                n = rows.numel() / rows.shape[1]
                f = m.momentum if m.momentum is not None else 1.0 / float(m.num_batches_tracked + 1)
                m.running_mean.mul_(1 - f).add_(mean, alpha=f)
                m.running_var.mul_(1 - f).add_(var * n / max(n - 1, 1), alpha=f)
                m.num_batches_tracked.add_(1)
            return y
        return forward

    def patched(self, forget_image, forget_label, remain_image=None, remain_label=None, forget_mask=None):
        norms = [m for m in self.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for m in norms:
            m.forward = forward_of(m, forget_image.shape[0])
        try:
            return compute(self, forget_image, forget_label, remain_image, remain_label, forget_mask)
        finally:
            for m in norms:
                del m.forward

    unlearner_module.PSGUnlearner.compute_losses = patched


def withdrawn_term_only(data: dict) -> None:
    """Drop the cross-entropy to the boundary targets from the forget term (the withdrawn-class term stays)."""
    unlearner_module.forget_loss = lambda logits, target: logits.float().sum() * 0.0


def bn_frozen(data: dict) -> None:
    """Run the network in eval mode in every unlearning step (batch-norm layers normalise with the original's running
    statistics and never update them; no dropout), whatever the regime."""
    compute = unlearner_module.PSGUnlearner.compute_losses

    def patched(self, *args, **kwargs):
        model = self.model
        model.train = lambda mode=True: torch.nn.Module.train(model, False)
        try:
            return compute(self, *args, **kwargs)
        finally:
            del model.train

    unlearner_module.PSGUnlearner.compute_losses = patched


def remain_stats(data: dict) -> None:
    """Batch-norm running statistics from the remain rows alone: each step trains on the mixed batch's statistics as
    usual; after the update the running statistics are put back and updated by a no-grad forward of the remain rows
    (one more forward a step), so that they describe the kept data, as a retrained model's do."""
    compute, update = unlearner_module.PSGUnlearner.compute_losses, unlearner_module.PSGUnlearner.update

    def computed(self, forget_image, forget_label, remain_image=None, remain_label=None, forget_mask=None):
        norms = [m for m in self.model.modules()
                 if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
        out = compute(self, forget_image, forget_label, remain_image, remain_label, forget_mask)
        keep = norms and remain_image is not None and self.model.training
        self._probe_stats = (norms, saved, remain_image) if keep else None
        return out

    def updated(self, loss, head_only=False):
        update(self, loss, head_only)
        stash, self._probe_stats = getattr(self, "_probe_stats", None), None
        if stash is not None:
            norms, saved, remain_image = stash
            with torch.no_grad():
                for m, (mean, var, count) in zip(norms, saved):
                    m.running_mean.copy_(mean)
                    m.running_var.copy_(var)
                    m.num_batches_tracked.copy_(count)
                self.model(remain_image)

    unlearner_module.PSGUnlearner.compute_losses = computed
    unlearner_module.PSGUnlearner.update = updated


VARIANTS = {"remain_boost": remain_boost, "crossed_only": crossed_only, "bn_check": bn_check,
            "renormalize_every_check": renormalize_every_check, "remain_normalised": remain_normalised,
            "withdrawn_term_only": withdrawn_term_only, "bn_frozen": bn_frozen,
            "remain_stats": remain_stats}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=list(S.SCENARIOS))
    p.add_argument("seed", type=int)
    p.add_argument("overrides", nargs="?", default="{}", help="JSON: unlearn() arguments; 'psg' holds PSGConfig fields")
    p.add_argument("--variant", choices=list(VARIANTS), default=None)
    p.add_argument("--trace", action="store_true", help="score the state at every check (slower; scoring only)")
    p.add_argument("--profile", action="store_true", help="print the run's 40 costliest calls (cProfile, cumulative)")
    p.add_argument("--fmnist-train", type=int, default=None, help="the benchmark's --fmnist-train (cached models)")
    p.add_argument("--fmnist-epochs", type=int, default=None, help="the benchmark's --fmnist-epochs")
    args = p.parse_args(argv)
    overrides = S.unlearn_overrides(json.loads(args.overrides))
    sizes = [f"--{name}={value}" for name, value in (("fmnist-train", args.fmnist_train),
                                                      ("fmnist-epochs", args.fmnist_epochs)) if value is not None]
    bench = S.parse(["--scenarios", args.scenario, "--threads", "1", *sizes])
    torch.set_num_threads(1)
    data = S.build_scenario(bench, args.scenario, args.seed)
    models = S.train_models(bench, args.scenario, args.seed, data)
    if args.variant:
        VARIANTS[args.variant](data)
    seg = args.scenario.startswith("seg")
    loaders = {"forget": loader(data["forget"], 256, False),
               "remain_eval": loader(S.sample(data["remain"], 2000, args.seed), 256, False),
               "test": loader(data["test"], 256, False)}
    reference = S.evaluate(models["retrained"], data, loaders, seg)
    original = S.evaluate(models["original"], data, loaders, seg)
    traced: list[dict] = []
    if args.trace:
        trace_checks(lambda net: S.evaluate(net, data, loaders, seg), reference, traced)
    bs = data["batch_size"]
    task = {"task": "segmentation", "forget_classes": data.get("forget_classes")} if seg else {}
    torch.manual_seed(args.seed)
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    start = time.perf_counter()
    model, result = unlearn(models["original"], loader(data["forget"], bs, True, args.seed),
                            loader(data["remain"], bs, True, args.seed), val_loader=loader(data["val"], 256, False),
                            evaluate=False, progress=False, **task, **overrides)
    seconds = time.perf_counter() - start
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    row = S.evaluate(model, data, loaders, seg)
    stopping = result.stopping
    margin = stopping["calibration"].get("margin")
    print(f"regime {stopping['regime']['regime']}, target {stopping['calibration']['target']:.3f}"
          + ("" if margin is None else f" (margin {margin:.3f})") + ", stopped "
          f"{stopping['stopped']}, best iteration {stopping.get('best_iteration')}, passes {result.epochs}")
    for c in stopping["checks"]:
        guard = "-" if c["guard"] is None else f"{c['guard']:.3f}"
        scored = next((t for t in traced if t["iteration"] == c["iteration"]), None)
        flags = "".join(f", {flag}" for flag in ("repairing", "renormalized", "head_given_up") if c.get(flag))
        print(f"  check at iteration {c['iteration']}: score {c['score']:.3f}, guard {guard}, admissible {c['admissible']}"
              + flags
              + ("" if scored is None else f"; scored: {scored['row']} gap {scored['gap']:.3f}"))
    gap = S.average_gap(row, reference)
    for name, scores in (("retrained", reference), ("original", original), ("unlearned", row)):
        print(f"{name:10s}", {k: round(v, 3) for k, v in scores.items() if v is not None})
    print(f"gap {gap:.3f}; time {seconds:.1f} s / retraining {models['retrain_time_s']:.1f} s = "
          f"{seconds / models['retrain_time_s']:.3f}")
    return {"gap": gap, "row": row, "stopping": stopping}


if __name__ == "__main__":
    main()
