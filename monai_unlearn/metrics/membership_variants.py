"""Metric-based membership inference (Song & Mittal, USENIX Security 2021) and the "MIA-efficacy" of unlearning.

Three threshold attacks on the model's softmax output, as in Song & Mittal, "Systematic Evaluation of Privacy
Risks of Machine Learning Models": **confidence** (probability of the true class), **entropy** of the prediction,
and **modified entropy** ``Mentr(p, y) = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)``, which, unlike the
plain entropy, also uses the label. Each attack learns a threshold from the model's outputs on *members* (remain
data, trained on) and *non-members* (held-out data), class-dependent when asked and the class has enough samples
on both sides. Applied to the forget set, the fraction of forget samples it calls non-member is the
**MIA-efficacy** of Jia et al. ("Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023): near the
retrained model's value, and high, means the forget set no longer looks like training data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from monai_unlearn.core.batch import default_prepare_batch
from monai_unlearn.metrics.classification import collect_outputs

__all__ = [
    "MIA_ATTACKS",
    "membership_features",
    "fit_threshold",
    "threshold_attack",
    "mia_efficacy",
    "evaluate_mia_variants",
]

MIA_ATTACKS: tuple[str, ...] = ("confidence", "entropy", "modified_entropy")
"""The metric-based attacks, each scored so that larger means "more likely a member"."""

_TINY = 1e-30


def membership_features(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-sample attack scores, oriented so that a *larger* score means *more member-like*.

    Args:
        logits: ``(N, C)`` classification logits.
        labels: ``(N,)`` class indices.

    Returns:
        ``{"confidence": p_y, "entropy": -H(p), "modified_entropy": -Mentr(p, y)}`` as float64 arrays.

    Raises:
        ValueError: for logits that are not ``(N, C)`` or labels that do not match them.
    """
    logits = torch.as_tensor(logits).detach().float().cpu()
    labels = torch.as_tensor(labels).detach().long().cpu().reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"need (N, C) logits and (N,) labels, got {tuple(logits.shape)} and {tuple(labels.shape)}.")
    if labels.numel() and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1] - 1}].")
    logp = F.log_softmax(logits.double(), dim=1)
    p = logp.exp()
    p_y = p.gather(1, labels[:, None])[:, 0]
    entropy = -(p * logp).sum(1)
    log1m = torch.log1p(-p.clamp(max=1 - 1e-15))
    onehot = F.one_hot(labels, logits.shape[1]).bool()
    mentr = -(1 - p_y) * logp.gather(1, labels[:, None])[:, 0] - torch.where(onehot, 0.0, p * log1m).sum(1)
    return {"confidence": p_y.numpy(), "entropy": (-entropy).numpy(), "modified_entropy": (-mentr).numpy()}


def fit_threshold(member: np.ndarray, nonmember: np.ndarray) -> tuple[float, float]:
    """The threshold ``t`` maximising balanced accuracy of "member iff score >= t".

    Returns:
        ``(threshold, balanced accuracy on the given scores)``.

    Raises:
        ValueError: when either group is empty.
    """
    member, nonmember = np.asarray(member, np.float64), np.asarray(nonmember, np.float64)
    if member.size == 0 or nonmember.size == 0:
        raise ValueError("both member and non-member scores are needed to fit a threshold.")
    values = np.concatenate([member, nonmember])
    is_member = np.concatenate([np.ones(member.size, bool), np.zeros(nonmember.size, bool)])
    order = np.argsort(-values, kind="stable")
    values, is_member = values[order], is_member[order]
    # predicting member for the first j samples (j = 0..n): TPR and TNR
    tp = np.concatenate([[0], np.cumsum(is_member)])
    fp = np.concatenate([[0], np.cumsum(~is_member)])
    balanced = 0.5 * (tp / member.size + (nonmember.size - fp) / nonmember.size)
    # only cut between distinct values
    valid = np.ones(values.size + 1, bool)
    valid[1:-1] = values[:-1] != values[1:]
    balanced = np.where(valid, balanced, -1.0)
    j = int(np.argmax(balanced))
    if j == 0:
        threshold = np.inf
    elif j == values.size:
        threshold = -np.inf
    else:
        threshold = 0.5 * (values[j - 1] + values[j])
    return float(threshold), float(balanced[j])


def _balance(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = min(a.size, b.size)
    return (a if a.size == n else rng.choice(a, n, replace=False)), (b if b.size == n else rng.choice(b, n, replace=False))


def threshold_attack(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    member_labels: np.ndarray | None = None,
    nonmember_labels: np.ndarray | None = None,
    per_class: bool = False,
    min_per_class: int = 20,
    n_splits: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit a (global or class-dependent) threshold attack on members vs non-members and measure it.

    The groups are balanced by seeded subsampling (chance is 0.5). The attack's accuracy is cross-validated
    (thresholds fitted on ``n_splits - 1`` folds, measured on the last); the returned thresholds are then fitted
    on all the data.

    Args:
        member_scores: member-likeness scores of training (remain) samples.
        nonmember_scores: the same for held-out samples.
        member_labels: class labels of the members (needed for ``per_class``).
        nonmember_labels: class labels of the non-members.
        per_class: fit one threshold per class (Song & Mittal's class-dependent thresholds) where the class has
            ``min_per_class`` samples on both sides; other classes use the global threshold.
        min_per_class: fewest samples per side for a class-specific threshold.
        n_splits: cross-validation folds (at least 2).
        seed: seed of the balancing and the folds.

    Returns:
        ``{"accuracy", "accuracy_std", "threshold", "class_thresholds", "n_per_group"}``.

    Raises:
        ValueError: for too few samples, or ``per_class`` without labels.
    """
    rng = np.random.default_rng(seed)
    m = np.asarray(member_scores, np.float64).reshape(-1)
    n = np.asarray(nonmember_scores, np.float64).reshape(-1)
    if per_class and (member_labels is None or nonmember_labels is None):
        raise ValueError("per_class thresholds need member_labels and nonmember_labels.")
    ml = np.zeros(m.size, np.int64) if member_labels is None else np.asarray(member_labels).reshape(-1)
    nl = np.zeros(n.size, np.int64) if nonmember_labels is None else np.asarray(nonmember_labels).reshape(-1)
    if ml.size != m.size or nl.size != n.size:
        raise ValueError("labels must have one entry per score.")
    size = min(m.size, n.size)
    if size < n_splits or n_splits < 2:
        raise ValueError(f"need n_splits >= 2 and at least n_splits samples per group; got {m.size} and {n.size}.")
    mi = rng.permutation(m.size)[:size]
    ni = rng.permutation(n.size)[:size]
    m, ml, n, nl = m[mi], ml[mi], n[ni], nl[ni]

    def fit(ms, mls, ns, nls):
        glob, _ = fit_threshold(ms, ns)
        classes = {}
        if per_class:
            for c in np.union1d(mls, nls):
                a, b = ms[mls == c], ns[nls == c]
                if a.size >= min_per_class and b.size >= min_per_class:
                    classes[int(c)] = fit_threshold(a, b)[0]
        return glob, classes

    def predict(scores, labels, glob, classes):
        thresholds = np.array([classes.get(int(c), glob) for c in labels]) if classes else glob
        return scores >= thresholds

    folds_m = np.array_split(rng.permutation(size), n_splits)
    folds_n = np.array_split(rng.permutation(size), n_splits)
    accs = []
    for k in range(n_splits):
        tm = np.setdiff1d(np.arange(size), folds_m[k])
        tn = np.setdiff1d(np.arange(size), folds_n[k])
        glob, classes = fit(m[tm], ml[tm], n[tn], nl[tn])
        tpr = predict(m[folds_m[k]], ml[folds_m[k]], glob, classes).mean()
        tnr = 1.0 - predict(n[folds_n[k]], nl[folds_n[k]], glob, classes).mean()
        accs.append(0.5 * (tpr + tnr))
    glob, classes = fit(m, ml, n, nl)
    return {
        "accuracy": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "threshold": glob,
        "class_thresholds": classes,
        "n_per_group": int(size),
    }


def mia_efficacy(
    remain_logits: torch.Tensor,
    remain_labels: torch.Tensor,
    heldout_logits: torch.Tensor,
    heldout_labels: torch.Tensor,
    forget_logits: torch.Tensor,
    forget_labels: torch.Tensor,
    attacks: Sequence[str] = MIA_ATTACKS,
    per_class: bool = False,
    n_splits: int = 5,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Train each metric-based attack on remain (members) vs held-out (non-members); apply it to the forget set.

    Args:
        remain_logits: ``(N_r, C)`` outputs of the model on (a sample of) its remain/training data.
        remain_labels: their labels.
        heldout_logits: outputs on data never trained on (e.g. test).
        heldout_labels: their labels.
        forget_logits: outputs on the forget set.
        forget_labels: their labels.
        attacks: any of ``MIA_ATTACKS``.
        per_class: class-dependent thresholds where possible (forget classes absent from the remain set fall
            back to the global threshold).
        n_splits: cross-validation folds for the attack's own accuracy.
        seed: seed of balancing and folds.

    Returns:
        ``{attack: {"efficacy": fraction of forget samples predicted non-member, "attack_accuracy": the attack's
        cross-validated balanced accuracy on remain vs held-out, "attack_accuracy_std", "threshold",
        "n_forget"}}``.

    Raises:
        ValueError: for an unknown attack or too few samples.
    """
    unknown = [a for a in attacks if a not in MIA_ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}; choose from {MIA_ATTACKS}.")
    fr, fh, ff = (membership_features(l, y) for l, y in (
        (remain_logits, remain_labels), (heldout_logits, heldout_labels), (forget_logits, forget_labels)))
    yr, yh, yf = (torch.as_tensor(y).reshape(-1).cpu().numpy() for y in (remain_labels, heldout_labels, forget_labels))
    if yf.size == 0:
        raise ValueError("the forget set is empty.")
    out: dict[str, dict[str, Any]] = {}
    for attack in attacks:
        fitted = threshold_attack(fr[attack], fh[attack], yr, yh, per_class=per_class, n_splits=n_splits, seed=seed)
        classes = fitted["class_thresholds"]
        thresholds = np.array([classes.get(int(c), fitted["threshold"]) for c in yf]) if classes else fitted["threshold"]
        member = ff[attack] >= thresholds
        out[attack] = {
            "efficacy": float(1.0 - member.mean()),
            "attack_accuracy": fitted["accuracy"],
            "attack_accuracy_std": fitted["accuracy_std"],
            "threshold": fitted["threshold"],
            "n_forget": int(yf.size),
        }
    return out


def evaluate_mia_variants(
    model: torch.nn.Module,
    forget_loader: Iterable[Any],
    remain_loader: Iterable[Any],
    heldout_loader: Iterable[Any],
    device: torch.device | str | None = None,
    prepare_batch: Callable[..., tuple[torch.Tensor, torch.Tensor]] = default_prepare_batch,
    attacks: Sequence[str] = MIA_ATTACKS,
    per_class: bool = False,
    n_splits: int = 5,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """``mia_efficacy`` of ``model``, collecting its outputs on the three loaders (classification models).

    Args:
        model: the (unlearned) network.
        forget_loader: the forget set.
        remain_loader: remain data (a sample of a few thousand is enough) as members.
        heldout_loader: data the model never saw, as non-members.
        device: where to run.
        prepare_batch: batch to ``(image, label)``.
        attacks: which attacks.
        per_class: class-dependent thresholds.
        n_splits: folds.
        seed: seed.

    Returns:
        as ``mia_efficacy``.
    """
    outputs = [collect_outputs(model, loader, device=device, prepare_batch=prepare_batch)
               for loader in (remain_loader, heldout_loader, forget_loader)]
    (rl, ry), (hl, hy), (fl, fy) = outputs
    return mia_efficacy(rl, ry, hl, hy, fl, fy, attacks=attacks, per_class=per_class, n_splits=n_splits, seed=seed)
