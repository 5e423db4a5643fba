"""The parameters of PSG unlearning, validated once at construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

from monai_unlearn.core.noise import NOISE_TYPES
from monai_unlearn.core.schedules import LAMBDA_SCHEDULES, STEP_SCHEDULES

__all__ = ["PSGConfig", "TARGET_TYPES", "REMAIN_LOSSES", "EPS_MODES", "WITHDRAWN_SCOPES", "PACKAGE_DEFAULT_PARAMS",
           "DEFAULT_EPOCHS", "DEFAULT_LR", "method_name"]

TARGET_TYPES = ("hard", "soft", "topk")
REMAIN_LOSSES = ("ce", "distill")
WITHDRAWN_SCOPES = ("network", "head")
EPS_MODES = ("absolute", "relative")
#: the PSG parameters of ``unlearn()`` and of the bundle overlay's ``unlearn_params`` when none are given
PACKAGE_DEFAULT_PARAMS: dict[str, Any] = {"eps": 0.2, "eps_mode": "relative", "num_steps": 1, "gamma": 0.0,
                                          "lam": 0.0, "phi": 4.0, "target": "hard", "remain_loss": "ce",
                                          "withdrawn_weight": 3.0, "withdrawn_scope": "head",
                                          "head_lr_scale": 10.0, "head_phi": 1.0, "seed": 0}
#: the pass budget (the calibrated stop usually ends sooner) and learning rate of ``unlearn()`` and the bundle
DEFAULT_EPOCHS = 15
DEFAULT_LR = 1e-3


@dataclass
class PSGConfig:
    """Parameters of perturbed sign-gradient (PSG) unlearning (Nahass et al., arXiv 2505.21872).

    Inner level, on the frozen reference f0, for ``num_steps`` steps::

        x_{t+1} = Proj( x_t + eta_t * sign( grad_x CE(f0(x_t), y) - lam * (x_t - x) + gamma * z_t ) )

    where the projection is onto the ``eps`` ball around ``x`` and the valid range. Outer level: fine-tune the
    model so forget samples take the label found at ``x_T``, plus ``phi`` times a remain-set term.
    ``PSGConfig.boundary_shrink()`` gives Boundary Shrink (Chen et al., CVPR 2023).

    Args:
        eps: radius of the search ball, in the network's input units (``eps_mode="absolute"``) or as a fraction
            of the batch's intensity range, ``max - min`` (``eps_mode="relative"``).
        eps_mode: ``"absolute"`` or ``"relative"``.
        num_steps: number of inner sign-gradient steps T.
        step_size: the first step's size eta_1, in the same units as ``eps``; ``None`` means ``eps``.
        step_schedule: ``"constant"`` or ``"sqrt"`` (eta_t = step_size / sqrt(t)).
        gamma: scale of the noise added inside the sign (0 disables it).
        normalize_gradient: divide each sample's input gradient by its mean absolute value before the proximity
            and noise terms are added, so ``gamma`` and ``lam`` are relative to the gradient's own scale and keep
            their meaning for confident (saturated) models, any loss scale and any batch size. The sign of the
            gradient alone is unchanged, so Boundary Shrink is unaffected. ``False`` follows the paper literally.
        noise: noise distribution: ``"normal"``, ``"laplace"``, ``"cauchy"`` or ``"uniform"``.
        lam: proximity weight lambda pulling the search back toward ``x`` (0 disables it).
        lambda_schedule: ``"none"``, ``"inverse"``, ``"exponential"`` or ``"linear"``, over outer iterations.
        lambda_decay: rate of the exponential lambda schedule.
        value_range: ``(low, high)`` bounds of valid input values; ``"batch"`` uses the batch's own min and
            max; ``None`` applies no range bound.
        early_stop: freeze each sample's search once the reference no longer predicts its label.
        target: ``"hard"`` (argmax at the boundary point), ``"soft"`` (softmax with ``temperature``) or
            ``"topk"`` (softmax restricted to the ``top_k`` most likely classes, renormalised).
        temperature: softmax temperature of soft targets.
        top_k: number of classes kept by ``"topk"`` targets.
        phi: weight of the remain-set term in the outer objective (0 disables it; then no remain data is needed).
        remain_loss: ``"ce"`` (cross-entropy on remain labels) or ``"distill"`` (KL divergence to the
            reference's predictions on remain images).
        distill_temperature: temperature of the distillation term.
        withdrawn_weight: weight of a term that drives the probability of the withdrawn classes on the forget items
            toward 0, as in a model never trained on them (``monai_unlearn.core.losses.withdrawn_loss``). It acts only
            in runs whose regime withdrew whole classes (``PSGUnlearner(withdrawn_classes=...)``); 0 leaves it out,
            as the paper does.
        withdrawn_scope: what a run whose regime withdrew whole classes (a classifier's labels or a segmenter's
            label classes) revises: ``"network"`` (every layer, as the paper does) or ``"head"`` (the network's head
            only, ``monai_unlearn.core.head.find_head``: the classification head, or the deepest module giving the
            network's output, such as a UNet's last residual unit; the layers before it are left as they are,
            batch-norm statistics included; when a check after the head's first pass finds retention lost, the run
            goes back to the original and revises the whole network, see ``CalibratedStopHandler``). Partial
            requests and a segmenter's cases revise the whole network either way.
        head_lr_scale: with ``withdrawn_scope="head"``, the optimizer's learning rate is multiplied by this for the
            head's steps (a single layer takes larger steps than a whole network tolerates).
        head_phi: with ``withdrawn_scope="head"``, the remain term's weight for the head's steps; ``None`` means
            ``phi``. The features are not revised there, so retention needs less protection than when they are.
        seed: seed of the search noise; ``None`` draws from the global generator.

    Raises:
        ValueError: when a parameter is out of its valid range or names an unknown option.
    """

    eps: float = 0.1
    eps_mode: str = "absolute"
    num_steps: int = 1
    step_size: float | None = None
    step_schedule: str = "constant"
    gamma: float = 0.0
    normalize_gradient: bool = True
    noise: str = "normal"
    lam: float = 0.0
    lambda_schedule: str = "none"
    lambda_decay: float = 0.01
    value_range: Any = "batch"
    early_stop: bool = False
    target: str = "hard"
    temperature: float = 1.0
    top_k: int = 2
    phi: float = 1.0
    remain_loss: str = "ce"
    distill_temperature: float = 2.0
    withdrawn_weight: float = 0.0
    withdrawn_scope: str = "network"
    head_lr_scale: float = 1.0
    head_phi: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every parameter; raise ``ValueError`` naming the first bad one."""
        _choice("eps_mode", self.eps_mode, EPS_MODES)
        _choice("step_schedule", self.step_schedule, STEP_SCHEDULES)
        _choice("noise", self.noise, NOISE_TYPES)
        _choice("lambda_schedule", self.lambda_schedule, LAMBDA_SCHEDULES)
        _choice("target", self.target, TARGET_TYPES)
        _choice("remain_loss", self.remain_loss, REMAIN_LOSSES)
        _choice("withdrawn_scope", self.withdrawn_scope, WITHDRAWN_SCOPES)
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}.")
        if self.eps_mode == "relative" and self.eps > 1:
            raise ValueError(f"a relative eps is a fraction of the intensity range and must be <= 1, got {self.eps}.")
        if int(self.num_steps) != self.num_steps or self.num_steps < 1:
            raise ValueError(f"num_steps must be a positive integer, got {self.num_steps}.")
        self.num_steps = int(self.num_steps)
        if self.step_size is not None and not self.step_size > 0:
            raise ValueError(f"step_size must be positive or None, got {self.step_size}.")
        if self.head_phi is not None and self.head_phi < 0:
            raise ValueError(f"head_phi must be non-negative or None, got {self.head_phi}.")
        for name in ("gamma", "lam", "phi", "lambda_decay", "withdrawn_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}.")
        for name in ("temperature", "distill_temperature", "head_lr_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if int(self.top_k) != self.top_k or self.top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {self.top_k}.")
        self.top_k = int(self.top_k)
        if self.value_range is not None and self.value_range != "batch":
            if not isinstance(self.value_range, Sequence) or isinstance(self.value_range, str) or len(self.value_range) != 2:
                raise ValueError(f"value_range must be None, 'batch' or (low, high), got {self.value_range!r}.")
            low, high = (float(v) for v in self.value_range)
            if not low < high:
                raise ValueError(f"value_range low must be below high, got {self.value_range!r}.")
            self.value_range = (low, high)

    @property
    def first_step_size(self) -> float:
        """The first inner step's size in ``eps`` units (``eps`` when ``step_size`` is ``None``)."""
        return self.eps if self.step_size is None else self.step_size

    @classmethod
    def package_default(cls, **kwargs: Any) -> PSGConfig:
        """The parameters ``unlearn()`` and the bundle use when none are given: a search radius of a fifth of each
        batch's intensity range (so it fits CT numbers and [0, 1] images alike), one step, the remain term at
        weight 4, which keeps retention while the calibrated stop decides how far to go, and, where whole classes are
        withdrawn, only the network's head revised, at ten times the learning rate and with the
        remain term at weight 1, and the withdrawn classes' probability on the forget items driven toward 0 at
        weight 3."""
        return cls(**{**PACKAGE_DEFAULT_PARAMS, **kwargs})

    @classmethod
    def boundary_shrink(cls, eps: float = 0.1, **kwargs: Any) -> PSGConfig:
        """Boundary Shrink (Chen et al., CVPR 2023): one step of size ``eps``, no noise, proximity or remain term."""
        return cls(eps=eps, num_steps=1, step_size=None, gamma=0.0, lam=0.0, phi=0.0, target="hard", **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-friendly dictionary."""
        out = asdict(self)
        if isinstance(out["value_range"], tuple):
            out["value_range"] = list(out["value_range"])
        return out


def _choice(name: str, value: Any, options: Sequence[str]) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}.")


def method_name(config: PSGConfig) -> str:
    """``"Boundary Shrink"`` for the one-step, noise-free, proximity-free special case, else ``"PSG"``."""
    plain = config.num_steps == 1 and config.gamma == 0 and config.lam == 0 and config.phi == 0
    return "Boundary Shrink" if plain and config.first_step_size == config.eps and config.target == "hard" else "PSG"
