"""Reports: tables built from evaluation summaries, JSON round trip, atomic markdown."""

from __future__ import annotations

import json

import pytest
import torch

from pa3d_train.report import miou_table, write_metrics, write_report


def _summary(per_cat):
    vals = list(per_cat.values())
    return {"per_category": per_cat, "category_miou": sum(vals) / len(vals), "instance_miou": vals[0],
            "examples": [{"points": torch.zeros(2, 3)}]}


def test_table_has_one_row_per_category_and_one_column_per_run():
    results = {"full": {"test": _summary({"mug": 0.5, "cap": 0.25})}, "s2": {"test": _summary({"mug": 0.1})}}
    table = miou_table(results, "test").splitlines()
    assert table[0] == "| category | full | s2 |"
    assert "| cap | 25.0 | n/a |" in table and "| mug | 50.0 | 10.0 |" in table
    assert table[-2] == "| **category mIoU** | **37.5** | **10.0** |"
    with pytest.raises(ValueError, match="no run has an evaluation named 'val'"):
        miou_table(results, "val")


def test_metrics_json_drops_example_tensors_and_converts_scalars(tmp_path):
    path = write_metrics(tmp_path / "metrics.json", {"a": _summary({"mug": 0.5}), "t": torch.tensor(1.5)})
    data = json.loads(path.read_text())
    assert data["t"] == 1.5 and "examples" not in data["a"] and data["a"]["per_category"] == {"mug": 0.5}


def test_report_lists_notes_tables_and_figures(tmp_path):
    results = {"full": {"held-out shapes": _summary({"mug": 0.5}), "held-out categories": _summary({"jug": 0.2})}}
    path = write_report(tmp_path / "report.md", title="Demo", results=results, notes=["teacher: random"],
                        figures={"parts": "parts.png"}, extra_sections={"Training": "loss went down"})
    text = path.read_text()
    for needle in ("# Demo", "- teacher: random", "## held-out shapes: mIoU (%)", "## held-out categories: mIoU (%)",
                   "![parts](parts.png)", "## Training", "| jug | 20.0 |"):
        assert needle in text
