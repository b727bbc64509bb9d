"""`vseg demo --quick`: every step of the main job, then a resumed re-run."""

from __future__ import annotations

import json

from tests.test_predict import video_info
from tests.test_train_evaluate import vseg


def test_quick_demo_runs_every_step_and_resumes(tmp_path):
    out = tmp_path / "demo"
    result = vseg("demo", "--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "temporal consistency" in result.stdout and "[quick mode]" in result.stdout
    report = json.loads((out / "report.json").read_text())
    for role in ("temporal", "baseline"):
        assert 0 <= report[role]["miou"] <= 1 and "temporal_consistency" in report[role]
    assert isinstance(report["temporal_ahead"], bool)
    frames, height, width = video_info(report["artefacts"]["video"])
    assert (frames, height, width) == (30, 64, 128)  # the held-out synthetic snippet
    assert (tmp_path / "demo" / "saved_models").is_dir()

    again = vseg("demo", "--quick", "--out", str(out))  # everything already there: resumes, no errors
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already done" in again.stdout
