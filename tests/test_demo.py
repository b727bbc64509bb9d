"""`vseg demo --quick`: every step of the main job, then a resumed re-run."""

from __future__ import annotations

import json
import re

import cv2
from click.testing import CliRunner

from cli import main
from tests.test_predict import video_info
from tests.test_train_evaluate import vseg


def test_quick_demo_runs_every_step_and_resumes(tmp_path):
    out = tmp_path / "demo"
    result = vseg("demo", "--quick", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "temporal consistency" in result.stdout and "[quick mode]" in result.stdout
    steps = [line.split(" ", 1)[0] for line in result.stdout.splitlines() if re.match(r"^\d/7 ", line)]
    assert steps == [f"{k}/7" for k in range(1, 8)]  # in order, each once
    assert result.stderr.strip() == ""  # no TensorFlow start-up lines, no warnings to read past
    report = json.loads((out / "report.json").read_text())
    for role in ("temporal", "baseline"):
        assert 0 <= report[role]["miou"] <= 1 and "temporal_consistency" in report[role]
    assert isinstance(report["temporal_ahead"], bool)
    frames, height, width = video_info(report["artefacts"]["video"])
    assert (frames, height, width) == (30, 64 * 4, 128 * 4 * 2)  # the held-out snippet, side by side, enlarged
    picture = cv2.imread(report["artefacts"]["comparison"])
    assert picture.shape[0] > 4 * 64 * 3  # four rows of 3x tiles: frame, ground truth, the two models
    assert (tmp_path / "demo" / "saved_models").is_dir()

    again = CliRunner().invoke(main, ["demo", "--quick", "--out", str(out)])  # all there: resumes, no errors
    assert again.exit_code == 0, again.output[-3000:]
    assert "already done" in again.output
    assert json.loads((out / "report.json").read_text())["temporal"] == report["temporal"]  # evaluation reused
