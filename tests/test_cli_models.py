"""`vseg models`: through the installed console script, and in this process where it fails early."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

import vseg_keras.models as vm
from cli import main
from tests.test_portable_models import TABLE_3

VSEG = shutil.which("vseg", path=os.path.dirname(sys.executable))


def run_vseg(*args: str) -> subprocess.CompletedProcess:
    assert VSEG, "the vseg console script is not installed next to this Python (pip install -e .)"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([VSEG, *args], capture_output=True, text=True, env=env, timeout=300)


def models_json(*args: str) -> list[dict]:
    result = run_vseg("models", "--format", "json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_models_json_lists_the_matching_configs_with_table_3_sizes():
    """The console script's JSON, for two patterns (every config's count is test_portable_models')."""
    rows = models_json("--no-flops", "vanilla-none-*", "*-cgru-original")  # GFLOPs: counted below, by hand
    names = [row["name"] for row in rows]
    assert sorted(names) == sorted(n for n in vm.list_models() if n.startswith("vanilla-none-")
                                   or n.endswith("-cgru-original"))
    for row in rows:
        assert row["trainable_params"] == TABLE_3[row["name"]], row["name"]


def test_gflops_agree_with_a_hand_count():
    """vanilla-none-small-shallow at 512x1024: the convolutions alone, counted by hand."""
    height, width = 512, 1024

    def conv(k, c_in, c_out, scale):
        return 2 * k * k * c_in * c_out * (height // scale) * (width // scale)

    convs = (
        conv(3, 3, 16, 1) + conv(3, 16, 16, 1)  # stem
        + conv(2, 16, 16, 2) + conv(3, 16, 32, 2) + conv(3, 32, 32, 2)  # enc1
        + conv(2, 32, 32, 4) + conv(3, 32, 64, 4) + conv(3, 64, 64, 4)  # enc2
        + conv(2, 64, 32, 4) + conv(3, 64, 32, 2) + conv(3, 32, 32, 2)  # dec1 (transposed conv from 1/4)
        + conv(2, 32, 16, 2) + conv(3, 32, 16, 1) + conv(3, 16, 16, 1)  # dec0
        + conv(3, 16, 20, 1)  # head
    ) / 1e9
    (row,) = models_json("vanilla-none-small-shallow")
    gflops = row["gflops"]
    # The profiler also counts bias adds, BatchNorm and activations: a little more than the convs.
    assert convs < gflops < convs * 1.02


def test_models_table_with_pattern():
    result = CliRunner().invoke(main, ["models", "resnet-*-small-deep", "--no-flops"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split()[:2] == ["model", "levels"]
    rows = [line.split() for line in lines[2:]]
    assert [row[0] for row in rows] == ["resnet-none-small-deep", "resnet-crnn-small-deep", "resnet-cgru-small-deep",
                                        "resnet-clstm-small-deep"]
    assert rows[2][2] == "1,707,460" and rows[3][2] == "2,099,380"


@pytest.mark.parametrize("args,message", [
    (["models", "lstm-*"], "Error: no model matches lstm-*"),
    (["models", "--flops-size", "512by1024"], "expected HEIGHTxWIDTH"),
])
def test_models_bad_arguments(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert message in result.output
    assert "Traceback" not in result.output
