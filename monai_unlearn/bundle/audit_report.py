"""A human-readable audit report (Markdown with the PNG plots) that a clinical reviewer can sign off."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from typing import Any

from monai_unlearn.io import atomic_write_bytes

__all__ = ["software_versions", "render_audit_markdown", "write_audit_markdown"]

_SHOWN_HASHES = 20


def software_versions() -> dict[str, str]:
    """Versions of Python and of the packages that produced the model."""
    import monai
    import numpy
    import torch

    import monai_unlearn

    versions = {"python": platform.python_version(), "torch": torch.__version__, "monai": monai.__version__,
                "numpy": numpy.__version__, "monai_unlearn": monai_unlearn.__version__}
    try:
        import ignite

        versions["pytorch-ignite"] = ignite.__version__
    except ImportError:
        pass
    return versions


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def _metrics_rows(record: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for name in ("before", "after", "retrained"):
        evaluation = record.get(name)
        if not evaluation:
            continue
        cells = [name]
        for split in ("forget", "remain", "test"):
            report = evaluation.get(split)
            cells.append(None if not report else report.get("accuracy", report.get("dice")))
        mia = evaluation.get("mia")
        cells += [None if not mia else mia["mean"], None if not mia else mia["std"]]
        rows.append(cells)
    return rows


def render_audit_markdown(
    record: Mapping[str, Any], audit: Mapping[str, Any], meta: Mapping[str, Any], versions: Mapping[str, str],
    reproduce_command: str, per_class_png: str = "per_class_accuracy.png", verify_command: str | None = None,
) -> str:
    """The audit report as Markdown.

    Args:
        record: the unlearning record (``unlearning/report.json``).
        audit: the audit record (``unlearning/audit.json``).
        meta: the new bundle's metadata.
        versions: software versions (``software_versions()``).
        reproduce_command: the command that reruns this unlearning from the source bundle.
        per_class_png: the per-class figure's file name.
        verify_command: the command that recomputes the forget set and the evidence from the two bundles.

    Returns:
        the Markdown text.
    """
    name = meta.get("name", "bundle")
    lines = [f"# Unlearning report: {name} {meta.get('version', '')}", ""]
    lines += [
        f"- **Created (UTC):** {audit.get('created_utc', '-')}",
        f"- **Reason:** {audit.get('reason') or '(none given)'}",
        f"- **Forget selector:** `{audit.get('selector')}`",
        f"- **Items forgotten:** {audit.get('num_forgotten')} of {audit.get('num_forgotten', 0) + record.get('num_remain', 0)}"
        " training items",
        f"- **Source bundle:** `{record.get('source_bundle', '-')}` (not modified)",
        f"- **Method:** {record.get('method')} ({record.get('epochs')} passes, {record.get('iterations')} iterations,"
        f" {record.get('time_s', 0.0):.1f} s of unlearning)",
        "",
        "## What was forgotten",
        "",
    ]
    for key, counts in (audit.get("counts") or {}).items():
        lines += _table([key, "items"], [[k, v] for k, v in sorted(counts.items())]) + [""]
    items = audit.get("items") or []
    lines += [f"SHA-256 of each forgotten item's identifier (path) and file content; the first {min(len(items), _SHOWN_HASHES)}"
              f" of {len(items)} are shown, all are in `audit.json`.", ""]
    lines += _table(["index", "id sha256", "content sha256"],
                    [[i.get("index", "-"), f"`{i['id_sha256'][:16]}…`", f"`{str(i.get('content_sha256'))[:16]}…`"]
                     for i in items[:_SHOWN_HASHES]])
    lines += ["", "## Method and parameters", ""]
    lines += _table(["parameter", "value"], [[k, v] for k, v in (record.get("config") or {}).items()])
    lines += ["", f"Optimizer: {record.get('optimizer')}"]
    stopping = record.get("stopping")
    if stopping:
        regime = stopping.get("regime") or {}
        calibration = stopping.get("calibration") or {}
        margin = calibration.get("margin")
        within = f" (within {_fmt(margin)}, the sampling noise of the forget and held-out items)" if margin else ""
        stopped = {"target": f"at the target{within}", "no_progress": "when it no longer came closer to the target",
                   "target_at_start": f"before its first step: the original already met the target{within}, so the "
                                      "model was left unchanged"}.get(stopping.get("stopped"), "at the pass budget")
        lines += ["", f"**Regime:** {regime.get('regime')} ({regime.get('reason')}). Forget target "
                      f"{_fmt(calibration.get('target'))}, estimated without a retrained model from "
                      f"{stopping.get('held_out') or 'the data given'}; the run stopped {stopped}"
                      f"{' and was rewound to its best state' if stopping.get('rewound') else ''}."]
        notes = list(calibration.get("notes") or [])
        if stopping.get("withdrawn_targets"):
            notes.append(f"no forgotten item was relabelled with a withdrawn label ({stopping['withdrawn_targets']}): "
                         "where the boundary search did not cross, the target was the nearest label that stays")
            weight = (record.get("config") or {}).get("withdrawn_weight")
            if weight:
                notes.append(f"the withdrawn label(s)' probability on the forgotten items was driven toward 0 (weight "
                             f"{weight}), as in a model never trained on them")
        head = stopping.get("head_only")
        if head and head.get("given_up"):
            given_up = next((c for c in stopping.get("checks") or [] if c.get("head_given_up")), {})
            notes.append(f"revising the classification head (`{head['name']}`) alone lost retention (held-out "
                         f"accuracy on the kept labels {_fmt(given_up.get('guard'))} at iteration "
                         f"{given_up.get('iteration')}), so the run went back to the original and revised the whole "
                         "network")
        elif head:
            notes.append(f"only the classification head (`{head['name']}`) was revised: the layers before it, "
                         "batch-norm statistics included, are the original's")
        repairing = sum(1 for c in stopping.get("checks") or [] if c.get("repairing"))
        if repairing:
            notes.append(f"{repairing} check(s) at the target went on while held-out accuracy on the kept labels was "
                         "still below the original's and rising")
        if stopping.get("norm_stats"):
            renormalized = sum(1 for c in stopping.get("checks") or [] if c.get("renormalized"))
            notes.append(f"batch-norm running statistics {stopping['norm_stats']} ({renormalized} check(s) did)")
        lines += ([""] + [f"- {note}" for note in notes]) if notes else []
    lines += ["", "## Evidence", ""]
    lines += _table(["model", "forget", "remain", "test", "MIA mean", "MIA std"], _metrics_rows(record))
    gap = record.get("retrain_gap")
    if gap:
        lines += ["", "Gap to the retrained model (absolute differences; lower is closer to retraining):", ""]
        lines += _table(["metric", "gap"], [[k, v] for k, v in gap.items()])
    else:
        lines += ["", "No retrained model was given, so the gap to retraining is not known."]
    lines += [
        "",
        "Forget, remain and test are accuracies on the forgotten training items, the kept training items and held-out"
        " data. MIA is the cross-validated accuracy of a logistic-regression membership-inference attack on"
        " per-sample losses, forget vs held-out (0.5: the attacker cannot tell forgotten data from unseen data);"
        " compare it with the retrained model's, not with 0.5 alone.",
        "",
        "![metrics over passes](curves.png)",
        "",
        f"![per-class scores before and after]({per_class_png})",
        "",
        "## Software",
        "",
    ]
    lines += _table(["package", "version"], [[k, v] for k, v in versions.items()])
    if verify_command:
        lines += ["", "## Verification", "", "Recompute the forget set (against the hashes above) and the accuracies and"
                  " MIA (against the table above) from the source and the unlearned bundle; add `--set id=value` for"
                  " any data override the run used:", "", f"```bash\n{verify_command}\n```"]
    lines += ["", "## Reproduce", "", "Rerun this unlearning from the unchanged source bundle (same selector, method and"
              " parameters; add the same data overrides, e.g. `--set dataset_dir=...`, if the original run had them):",
              "", f"```bash\n{reproduce_command}\n```", "",
              "## Sign-off", "", "| role | name | date | decision |", "|---|---|---|---|",
              "| clinical reviewer |  |  |  |", "| ML engineer |  |  |  |", ""]
    return "\n".join(lines)


def write_audit_markdown(
    report_dir: str, record: Mapping[str, Any], audit: Mapping[str, Any], meta: Mapping[str, Any],
    reproduce_command: str, filename: str = "report.md", per_class_png: str = "per_class_accuracy.png",
    verify_command: str | None = None,
) -> str:
    """Render the audit report and write it atomically to ``report_dir/filename``; returns the path."""
    path = os.path.join(report_dir, filename)
    text = render_audit_markdown(record, audit, meta, software_versions(), reproduce_command, per_class_png,
                                 verify_command)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
