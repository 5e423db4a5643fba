"""Loss-based membership inference: can an attacker tell forget samples from held-out ones?"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.utils import optional_import

LogisticRegression, _ = optional_import("sklearn.linear_model", name="LogisticRegression")
StandardScaler, _ = optional_import("sklearn.preprocessing", name="StandardScaler")
make_pipeline, _ = optional_import("sklearn.pipeline", name="make_pipeline")
StratifiedKFold, _ = optional_import("sklearn.model_selection", name="StratifiedKFold")
cross_val_score, _ = optional_import("sklearn.model_selection", name="cross_val_score")

__all__ = ["membership_inference_score"]


def _as_1d(values: torch.Tensor | np.ndarray | Sequence[float], name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().float().numpy()
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values (non-finite images or network outputs?); the attack needs finite losses.")
    return array


def membership_inference_score(
    forget_losses: torch.Tensor | np.ndarray | Sequence[float],
    heldout_losses: torch.Tensor | np.ndarray | Sequence[float],
    n_splits: int = 5,
    seed: int = 0,
) -> dict[str, float | int]:
    """Cross-validated accuracy of a logistic-regression attack that separates forget from held-out samples.

    The attacker sees one feature per sample, its loss under the revised model. Forget samples are labelled
    1 and held-out samples (never trained on, e.g. test data) 0. The larger group is randomly subsampled
    (seeded) to the size of the smaller, so chance level is exactly 0.5; a standardising step precedes the
    logistic regression so the result does not depend on the scale of the losses. Accuracy is measured with
    a shuffled ``StratifiedKFold``.

    A score near 0.5 means the attacker cannot tell forget samples from data the model never saw (the goal
    of unlearning); near 1.0 means the forget samples still look like training data.

    Args:
        forget_losses: per-sample losses on the forget set (see ``per_sample_loss``).
        heldout_losses: per-sample losses on held-out data.
        n_splits: number of cross-validation folds, at least 2.
        seed: seed of the subsampling and of the fold shuffling.

    Returns:
        a dict with ``mean`` and ``std`` of the fold accuracies, ``n`` (samples used in total, both groups),
        ``n_per_group`` and ``n_splits``.

    Raises:
        ValueError: when ``n_splits < 2``, when either group has fewer than ``n_splits`` samples (the folds
            could not all hold both groups; lower ``n_splits`` or provide more samples), or on non-finite losses.
        OptionalImportError: when scikit-learn is not installed.
    """
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 2:
        raise ValueError(f"n_splits must be an integer of at least 2, got {n_splits!r}.")
    # sorted, so the score depends on the losses alone and not on the order a (shuffling) loader produced them in
    forget = np.sort(_as_1d(forget_losses, "forget_losses"))
    heldout = np.sort(_as_1d(heldout_losses, "heldout_losses"))
    smaller = min(forget.size, heldout.size)
    if smaller < n_splits:
        raise ValueError(
            f"membership inference with n_splits={n_splits} needs at least {n_splits} samples per group; got "
            f"{forget.size} forget and {heldout.size} held-out losses."
        )
    rng = np.random.default_rng(seed)
    if forget.size > smaller:
        forget = forget[np.sort(rng.choice(forget.size, smaller, replace=False))]
    if heldout.size > smaller:
        heldout = heldout[np.sort(rng.choice(heldout.size, smaller, replace=False))]
    features = np.concatenate([forget, heldout]).reshape(-1, 1)
    targets = np.concatenate([np.ones(smaller, dtype=np.int64), np.zeros(smaller, dtype=np.int64)])
    attacker = make_pipeline(StandardScaler(), LogisticRegression())
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    scores = cross_val_score(attacker, features, targets, cv=folds, scoring="accuracy")
    return {
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "n": int(2 * smaller),
        "n_per_group": int(smaller),
        "n_splits": int(n_splits),
    }
