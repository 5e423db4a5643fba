from __future__ import annotations

import os
import tempfile
import unittest

from monai_unlearn.bundle.audit import build_audit
from monai_unlearn.bundle.audit_report import render_audit_markdown, software_versions, write_audit_markdown

RECORD = {
    "method": "PSG", "epochs": 3, "iterations": 12, "time_s": 1.5, "num_remain": 40,
    "source_bundle": "/models/original", "config": {"eps": 0.2, "phi": 4.0}, "optimizer": {"name": "SGD", "lr": 0.001},
    "before": {"forget": {"accuracy": 1.0}, "remain": {"accuracy": 0.98}, "test": {"accuracy": 0.97},
               "mia": {"mean": 0.41, "std": 0.05}},
    "after": {"forget": {"accuracy": 0.0}, "remain": {"accuracy": 0.97}, "test": None, "mia": None},
    "retrain_gap": {"forget_acc": 0.0, "remain_acc": 0.01, "average_gap": 0.005},
}


class TestAuditReport(unittest.TestCase):
    def test_render(self):
        items = [{"image": f"/data/case{i}.nii.gz", "label": 1, "device": "scanner_b"} for i in range(25)]
        audit = build_audit(items, "device=scanner_b", {"method": "PSG"}, None, reason="scanner retired")
        text = render_audit_markdown(RECORD, audit, {"name": "chest classifier", "version": "1.0.1"},
                                     software_versions(), "python -m monai_unlearn unlearn --bundle B")
        self.assertIn("# Unlearning report: chest classifier 1.0.1", text)
        self.assertIn("**Reason:** scanner retired", text)
        self.assertIn("| scanner_b | 25 |", text)
        self.assertIn("the first 20 of 25 are shown", text)
        self.assertEqual(text.count("…` | `"), 20)
        self.assertIn("| before | 1.000 | 0.980 | 0.970 | 0.410 | 0.050 |", text)
        self.assertIn("| after | 0.000 | 0.970 | - | - | - |", text)
        self.assertIn("| average_gap | 0.005 |", text)
        self.assertIn("python -m monai_unlearn unlearn --bundle B", text)
        self.assertIn("| torch |", text)
        self.assertIn("![per-class scores before and after](per_class_accuracy.png)", text)
        self.assertIn("Items forgotten:** 25 of 65", text)

    def test_the_regime_its_target_notes_and_stop_are_said(self):
        stopping = {"regime": {"regime": "partial", "reason": "kept items still have label(s) [0, 1]"},
                    "calibration": {"target": 0.274, "notes": ["the kept data does not carry over to the forget items"]},
                    "held_out": "the validation data", "stopped": "no_progress", "rewound": True}
        audit = build_audit([{"image": "a.nii.gz", "label": 0}], "device=mni152", {}, None)
        text = render_audit_markdown({**RECORD, "stopping": stopping}, audit, {"name": "x"}, {}, "verify")
        self.assertIn("**Regime:** partial (kept items still have label(s) [0, 1]). Forget target 0.274", text)
        self.assertIn("the run stopped when it no longer came closer to the target and was rewound", text)
        self.assertIn("- the kept data does not carry over to the forget items", text)
        # an original that already met its target: the report says the model was left unchanged
        text = render_audit_markdown({**RECORD, "stopping": {**stopping, "stopped": "target_at_start", "rewound": False}},
                                     audit, {"name": "x"}, {}, "verify")
        self.assertIn("the run stopped before its first step: the original already met the target, so the model was "
                      "left unchanged.", text)
        self.assertNotIn("batch-norm", text)  # off by default: nothing said
        # met within the target's sampling noise: the margin is said
        margin = {**stopping, "stopped": "target_at_start", "rewound": False,
                  "calibration": {"target": 0.828, "margin": 0.044}}
        text = render_audit_markdown({**RECORD, "stopping": margin}, audit, {"name": "x"}, {}, "verify")
        self.assertIn("the original already met the target (within 0.044, the sampling noise of the forget and held-out "
                      "items), so the model was left unchanged.", text)
        # unlearn_remain_norm_stats: how many checks estimated the statistics again
        checks = [{"renormalized": True}, {}, {"renormalized": True}]
        text = render_audit_markdown({**RECORD, "stopping": {
            **stopping, "checks": checks, "norm_stats": "estimated again from remain data at a check whose guard fell"}},
            audit, {"name": "x"}, {}, "verify")
        self.assertIn("- batch-norm running statistics estimated again from remain data at a check whose guard fell "
                      "(2 check(s) did)", text)
        self.assertNotIn("driven toward 0", text)
        self.assertNotIn("went on while", text)
        # a withdrawn class: the term on its probability, and a check that finished a repair under way
        withdrawn = {**stopping, "withdrawn_targets": [2], "checks": [{}, {"repairing": True}, {}]}
        text = render_audit_markdown({**RECORD, "config": {**RECORD.get("config", {}), "withdrawn_weight": 3.0},
                                      "stopping": withdrawn}, audit, {"name": "x"}, {}, "verify")
        self.assertIn("- the withdrawn label(s)' probability on the forgotten items was driven toward 0 (weight 3.0)",
                      text)
        self.assertIn("- 1 check(s) at the target went on while held-out accuracy on the kept labels", text)
        self.assertNotIn("classification head", text)  # the whole network was revised: nothing said
        # the head alone, and the head given up for the whole network
        head_only = {**withdrawn, "head_only": {"name": "fc", "given_up": False}}
        text = render_audit_markdown({**RECORD, "stopping": head_only}, audit, {"name": "x"}, {}, "verify")
        self.assertIn("- only the classification head (`fc`) was revised: the layers before it, batch-norm statistics "
                      "included, are the original's", text)
        given_up = {**withdrawn, "head_only": {"name": "fc", "given_up": True},
                    "checks": [{"iteration": 4, "guard": 0.5, "head_given_up": True}, {}]}
        text = render_audit_markdown({**RECORD, "stopping": given_up}, audit, {"name": "x"}, {}, "verify")
        self.assertIn("- revising the classification head (`fc`) alone lost retention (held-out accuracy on the kept "
                      "labels 0.500 at iteration 4), so the run went back to the original and revised the whole "
                      "network", text)

    def test_write_is_atomic_and_complete(self):
        audit = build_audit([{"image": "a.nii.gz", "label": 0}], "label=0", {}, None)
        with tempfile.TemporaryDirectory() as folder:
            path = write_audit_markdown(folder, RECORD, audit, {"name": "x"}, "verify")
            self.assertEqual(os.listdir(folder), ["report.md"])
            self.assertIn("## Sign-off", open(path).read())


if __name__ == "__main__":
    unittest.main()
