"""`vseg train` and `vseg evaluate` end to end on tiny synthetic shards."""

from __future__ import annotations

import contextlib
import copy
import csv
import glob
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.test_cli_models import VSEG
from vseg_keras.cpu_kernels import zoo_name_of
from vseg_keras.folder_lock import LOCK_NAME
from vseg_keras.loading import load_trained_model
from vseg_keras.models.layers import frame_size_requirement
from vseg_keras.train import TrainConfig, TrainingError, read_resume_state, train

ROOT = Path(__file__).resolve().parents[1]
MODEL = "vanilla-crnn-small-shallow"
TC_KEYS = ("temporal_consistency", "per_class_temporal_consistency", "temporal_consistency_per_pair",
           "temporal_consistency_pairs", "temporal_consistency_flow")
TRAIN_ARGS = ["--model", MODEL, "--batch-size", "2", "--seq-len", "3", "--crop", "32x64",
              "--steps-per-epoch", "2", "--val-context", "2", "--max-frame-skip", "2"]


def vseg(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([VSEG, *args], capture_output=True, text=True, env=full_env, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A converted synthetic dataset: 6 train and 3 val snippets of 64x128."""
    root = tmp_path_factory.mktemp("synthetic")
    result = vseg("synth", str(root / "src"), "--train-sequences", "6", "--val-sequences", "3",
                  "--height", "64", "--width", "128", "--seed", "1")
    assert result.returncode == 0, result.stderr
    result = vseg("convert", str(root / "src"), str(root / "data"), "--height", "64", "--width", "128",
                  "--workers", "2")
    assert result.returncode == 0, result.stderr
    return str(root / "data")


def history_epochs(run_dir) -> list[int]:
    with open(os.path.join(run_dir, "history.csv"), newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_train_then_evaluate_from_the_cli(shards, tmp_path):
    run_dir = tmp_path / "run"
    result = vseg("train", shards, str(run_dir), "--epochs", "2", *TRAIN_ARGS, "--remat", "--cpu-kernels", "eigen")
    assert result.returncode == 0, result.stderr
    assert "placement: 1 device (CPU), global batch" in result.stdout
    assert "CPU kernels: TensorFlow's Eigen\n" in result.stdout  # chosen before the CLI imports TensorFlow
    assert "windows: causal, 1-3 frames ending at the labelled frame" in result.stdout
    assert "best val mIoU" in result.stdout
    for name in ("config.json", "last.keras", "best.keras", "history.csv", "backup/state.json"):
        assert (run_dir / name).exists(), name
    assert history_epochs(run_dir) == [0, 1]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["options"]["model"] == MODEL and len(config["data_manifest_sha256"]) == 64
    assert config["options"]["remat"] is True
    # What evaluate, predict and export choose TensorFlow's CPU kernels for, read before TensorFlow loads.
    assert zoo_name_of(str(run_dir)) == zoo_name_of(str(run_dir / "best.keras")) == MODEL
    assert zoo_name_of(str(run_dir / "history.csv")) is None and zoo_name_of(str(tmp_path)) is None
    assert os.listdir(run_dir / "logs")  # TensorBoard

    # The same command again (rematerialisation and the CPU kernels may be switched): nothing left to do.
    again = invoke("train", shards, str(run_dir), "--epochs", "2", *TRAIN_ARGS)
    assert again.exit_code == 0 and "already done" in again.output
    assert history_epochs(run_dir) == [0, 1]
    # Different options in the same run dir are refused.
    other = invoke("train", shards, str(run_dir), "--epochs", "2", *TRAIN_ARGS, "--lr", "0.01")
    assert other.exit_code == 1 and "other options (lr: 0.0003 -> 0.01)" in other.output

    out = tmp_path / "eval"
    report_path = tmp_path / "report.json"
    result = invoke("evaluate", str(run_dir), shards, "--context", "2", "--out", str(out),  # in this process
                    "--report", str(report_path), "--save-predictions", str(tmp_path / "pred"), "--flow", "farneback")
    assert result.exit_code == 0, result.output
    assert "mIoU (cityscapes, 19 classes)" in result.output
    report = json.loads(report_path.read_text())
    for key in ("miou", "per_class_iou", "pixel_accuracy", "mean_class_accuracy", "paper_miou_20",
                "paper_macc", "temporal_consistency", "context", "num_sequences"):
        assert key in report, key
    assert report["context"] == 2 and report["num_sequences"] == 3
    assert 0 <= report["miou"] <= 1 and 0 <= report["temporal_consistency"] <= 1
    assert report["temporal_consistency_flow"] == "farneback"
    assert report["temporal_consistency_pairs"] == 3 * 2  # every consecutive pair of the 3-frame windows
    tc_per_class = [v for v in report["per_class_temporal_consistency"].values() if v is not None]
    assert report["temporal_consistency"] == pytest.approx(sum(tc_per_class) / len(tc_per_class))
    assert (out / "confusion_matrix.png").stat().st_size > 0
    # Without TC only the labelled frame is decoded: the same scores.
    result = invoke("evaluate", str(run_dir), shards, "--context", "2", "--out", str(tmp_path / "eval-no-tc"),
                    "--no-temporal-consistency")
    assert result.exit_code == 0, result.output
    without_tc = json.loads((tmp_path / "eval-no-tc" / "report.json").read_text())
    assert all(without_tc.pop(key) is None for key in TC_KEYS)
    assert without_tc == {k: v for k, v in report.items() if k not in TC_KEYS}
    predictions = sorted(os.listdir(tmp_path / "pred"))
    assert len(predictions) == 3 and all(p.endswith("_pred_labelIds.png") for p in predictions)
    # The official Cityscapes evaluator finds them by name and agrees with our mIoU.
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    args = copy.copy(official.args)
    args.predictionPath, args.predictionWalk = str(tmp_path / "pred"), None
    args.quiet, args.JSONOutput, args.evalInstLevelScore = True, False, False
    ground_truth = sorted(glob.glob(os.path.join(os.path.dirname(shards), "src", "gtFine", "val", "*", "*.png")))
    result = official.evaluateImgLists([official.getPrediction(args, gt) for gt in ground_truth], ground_truth, args)
    assert result["averageScoreClasses"] == pytest.approx(report["miou"])

    sweep = vseg("evaluate", str(run_dir / "last.keras"), shards, "--context-sweep", "0,2,4", "--out", str(out))
    assert sweep.returncode == 0, sweep.stderr
    curve = json.loads((out / "context_sweep.json").read_text())
    assert curve["contexts"] == [0, 2, 4] and len(curve["miou"]) == 3
    assert (out / "context_sweep.png").stat().st_size > 0


# Runs vseg commands in one process (Keras fixes its backend per process; JAX compiles once per process).
CLI_SESSION = """
import json, sys
from click.testing import CliRunner
from cli import main
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(main, args)
    print(json.dumps({"exit_code": result.exit_code, "output": result.output}))
"""


def test_train_evaluate_predict_on_jax_with_data_parallel_and_mid_epoch_backups(shards, tmp_path):
    """The CLI on JAX: ``--logical-cpus 2`` trains with keras.distribution.DataParallel over two host devices.

    (A JAX-saved .keras loading on TensorFlow, what export then does, is test_backends'.)"""
    frames = sorted(glob.glob(os.path.join(os.path.dirname(shards), "src", "leftImg8bit_sequence", "val", "*")))[0]
    for attempt in ("first", "second"):  # JAX's 2 host devices have hung at random on 2 busy cores (see the note)
        run_dir, out = str(tmp_path / attempt / "run"), str(tmp_path / "eval")
        commands = [
            ["train", shards, run_dir, "--epochs", "1", *TRAIN_ARGS[:4], "--seq-len", "2", "--crop", "32x64",
             "--steps-per-epoch", "2", "--val-steps", "1", "--logical-cpus", "2", "--backup-every", "1"],
            ["evaluate", run_dir, shards, "--context", "2", "--out", out, "--no-temporal-consistency"],
            ["predict", run_dir, frames, str(tmp_path / "out.mp4"), "--no-progress"],
            ["export", run_dir, "--out", str(tmp_path / "sm")],
        ]
        try:
            session = subprocess.run([sys.executable, "-c", CLI_SESSION, json.dumps(commands)], capture_output=True,
                                     text=True, timeout=400, cwd=ROOT, env={**os.environ, "KERAS_BACKEND": "jax",
                                                                             "TF_CPP_MIN_LOG_LEVEL": "3"})
            break
        except subprocess.TimeoutExpired:
            if attempt == "second":
                raise
    assert session.returncode == 0, session.stderr[-3000:]
    train, evaluate, predict, export = (json.loads(line) for line in session.stdout.strip().splitlines()[-4:])
    assert train["exit_code"] == 0, train["output"][-3000:]
    assert "placement: 2 replicas (DataParallel), global batch 2" in train["output"]
    assert "best val mIoU" in train["output"]
    assert evaluate["exit_code"] == 0, evaluate["output"][-3000:]  # the TC path is Keras' predict, as on TF
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["num_sequences"] == 3 and 0 <= report["miou"] <= 1
    assert predict["exit_code"] == 0 and (tmp_path / "out.mp4").stat().st_size > 0, predict["output"][-3000:]
    assert export["exit_code"] == 1 and "needs the TensorFlow backend" in export["output"]


def start_training(shards, run_dir, args: list[str], **popen) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([VSEG, "train", shards, str(run_dir), *args], env=env, **popen)


def wait_for_backup(process: subprocess.Popen, run_dir, epochs_done: int, step: int) -> None:
    """Waits until the committed resume state is at or past ``(epochs_done, step)``."""
    deadline = time.time() + 300
    while True:
        state = read_resume_state(str(run_dir))
        if (state.get("epochs_done", 0), state.get("step", 0)) >= (epochs_done, step):
            return
        assert process.poll() is None, "training ended before it could be stopped"
        assert time.time() < deadline
        time.sleep(0.05)


def test_training_stopped_by_sigterm_or_kill_9_mid_epoch_resumes_to_the_same_weights(shards, tmp_path):
    """SIGTERM: one line, exit 75, a backup of the step; kill -9: the last backup. Resuming either reads the rest
    of the epoch's windows (the pipeline position) and, with --deterministic, ends with an uninterrupted run's
    weights and history. A second writer is refused; a failed backup write keeps the last backup. (Full windows of
    2 frames: one traced step.)"""
    args = ["--epochs", "2", "--model", MODEL, "--batch-size", "2", "--seq-len", "2", "--full-windows", "--crop",
            "32x64", "--steps-per-epoch", "3", "--val-context", "1", "--val-steps", "1", "--backup-every", "1",
            "--deterministic"]
    reference = start_training(shards, tmp_path / "reference", args, stdout=subprocess.DEVNULL)
    run_dir = tmp_path / "run"
    process = start_training(shards, run_dir, args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_backup(process, run_dir, 0, 2)
    second = invoke("train", shards, str(run_dir), *args[:-1])  # one writer per run dir (in this process:
    # without --deterministic, which would switch on TensorFlow's op determinism here for good)
    assert second.exit_code == 1 and second.output.strip().splitlines()[-1].startswith(
        f"Error: {run_dir} is being written by another vseg train (host {socket.gethostname()}, pid {process.pid},")
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    state = read_resume_state(str(run_dir))
    assert process.returncode == 75, output[-2000:]
    assert output.strip().splitlines()[-1] == (
        f"Error: stopped by SIGTERM at epoch {state['epochs_done'] + 1}, step {state.get('step', 0)}; the backup in "
        f"{run_dir} resumes there: run the same command again (exit code 75)")
    assert not (run_dir / LOCK_NAME).exists()

    process = start_training(shards, run_dir, args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_backup(process, run_dir, 1, 1)  # within epoch 2
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = read_resume_state(str(run_dir))
    assert killed_at["epochs_done"] == 1 and 1 <= killed_at.get("step", 0) < 3, killed_at

    # A failed write: files may not grow past 200 kB (the soft RLIMIT_FSIZE; Python ignores SIGXFSZ), and a
    # backup's weights are larger. In this process, so without --deterministic (a change resuming allows).
    config = TrainConfig(model=MODEL, epochs=2, batch_size=2, seq_len=2, full_windows=True, crop=(32, 64),
                         steps_per_epoch=3, val_context=1, val_steps=1, backup_every=1)
    with pytest.raises(TrainingError) as failure, file_size_limit(200_000):
        train(shards, str(run_dir), config, log=lambda line: None, verbose=0)
    assert str(failure.value) == (
        f"{run_dir}/backup: writing a backup failed (File too large); the last one (resuming at epoch 2, step "
        f"{killed_at['step']}) is intact: free space and run the same command to resume")
    assert read_resume_state(str(run_dir)) == killed_at
    assert not glob.glob(f"{run_dir}/**/.*.tmp*", recursive=True)

    result = vseg("train", shards, str(run_dir), *args)
    assert result.returncode == 0, result.stderr
    assert f"resuming at epoch 2, step {killed_at['step']} (of 3)" in result.stdout
    assert reference.wait(timeout=300) == 0
    assert history_epochs(run_dir) == [0, 1]
    with open(run_dir / "history.csv") as ours, open(tmp_path / "reference" / "history.csv") as theirs:
        assert ours.read() == theirs.read()  # the resumed epochs' metrics cover the whole epoch
    assert load_optimizer_iterations(run_dir, 2) == 2 * 3  # the optimizer state restored, not restarted
    for name in ("last.keras", "best.keras"):
        ours, theirs = (load_trained_model(str(folder / name)) for folder in (run_dir, tmp_path / "reference"))
        for mine, reference_weights in zip(ours.get_weights(), theirs.get_weights(), strict=True):
            np.testing.assert_allclose(mine, reference_weights, rtol=0, atol=1e-6)


@contextlib.contextmanager
def file_size_limit(size: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def load_optimizer_iterations(run_dir, epochs_done: int) -> int:
    state = read_resume_state(str(run_dir))
    assert state["epochs_done"] == epochs_done
    model = load_trained_model(str(run_dir / "last.keras"))
    from vseg_keras.train import compile_for_training

    compile_for_training(model, TrainConfig(model=MODEL))
    model.optimizer.build(model.trainable_variables)
    model.load_weights(str(run_dir / "backup" / state["weights"]))
    iterations = int(model.optimizer.iterations.numpy())
    keras.backend.clear_session()
    return iterations


def test_mirrored_strategy_over_two_logical_cpus_with_the_temporal_loss(shards, tmp_path):
    result = vseg("train", shards, str(tmp_path / "run"), "--epochs", "1", *TRAIN_ARGS, "--logical-cpus", "2",
                  "--temporal-loss", "0.5", "--backup-every", "1")
    assert result.returncode == 0, result.stderr
    assert "placement: 2 replicas (MirroredStrategy), global batch 2" in result.stdout
    assert "decoder on it and the frame before; temporal loss 0.5 (DIS flow, target " in result.stdout
    assert history_epochs(tmp_path / "run") == [0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_workers(shards, run_dir, epochs: int, stop_at: tuple[int, int] | None = None) -> list[str]:
    """Runs the two workers to the end, or with ``stop_at`` sends SIGTERM to the second (not the chief) once the
    chief's backup is at ``(epochs_done, step)``; both must then stop (exit 75) at the same step."""
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    processes = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_CONFIG": tf_config}
        processes.append(subprocess.Popen(
            [VSEG, "train", shards, str(run_dir), "--epochs", str(epochs), *TRAIN_ARGS, "--backup-every", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        ))
    if stop_at is not None:
        wait_for_backup(processes[0], run_dir, *stop_at)
        processes[1].send_signal(signal.SIGTERM)
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == (0 if stop_at is None else 75), stderr[-3000:]
    return [stdout if stop_at is None else stdout + stderr for stdout, stderr in outputs]


def test_two_process_multi_worker_training_on_localhost(shards, tmp_path):
    run_dir = tmp_path / "run"
    for stdout in run_two_workers(shards, run_dir, epochs=1):
        assert "placement: 2 replicas (MultiWorkerMirroredStrategy), global batch 2" in stdout
    assert history_epochs(run_dir) == [0]  # written by the chief only
    assert (run_dir / "last.keras").exists()
    assert sorted(os.listdir(run_dir)) == ["backup", "best.keras", "config.json", "history.csv", "last.keras", "logs"]
    # Both workers resume from the chief's committed state and train on together; SIGTERM to one stops both at
    # the same step, where the chief backs up.
    outputs = run_two_workers(shards, run_dir, 3, stop_at=(1, 1))
    assert all("resuming at epoch 2, step 0 (of 2)" in output for output in outputs)
    state = read_resume_state(str(run_dir))
    where = f"at epoch {state['epochs_done'] + 1}, step {state.get('step', 0)};"
    assert f"\nError: stopped by a signal to another worker {where}" in outputs[0]
    assert f"\nError: stopped by SIGTERM {where}" in outputs[1]  # (gRPC may complain after it, the chief gone)
    assert state["epochs_done"] >= 1 and history_epochs(run_dir) == list(range(state["epochs_done"]))


def invoke(*args: str):
    """``vseg ARGS`` in this process (click's runner): no process start-up (TensorFlow is loaded already)."""
    from click.testing import CliRunner

    from cli import main

    return CliRunner().invoke(main, list(args))


def test_bad_inputs_give_one_clear_line(shards, tmp_path):
    missing = invoke("train", str(tmp_path / "nowhere"), str(tmp_path / "run"), "--model", MODEL)
    assert missing.exit_code == 1 and "no manifest" in missing.output and missing.exception.__class__ is SystemExit
    # Logical CPUs must be set before TensorFlow starts: a process of its own.
    odd = vseg("train", shards, str(tmp_path / "run"), *TRAIN_ARGS[:2], "--batch-size", "3", "--logical-cpus", "2")
    assert odd.returncode != 0 and "multiple of the 2 replicas" in odd.stderr
    # Validation must fill one global batch over the replicas (3 val sequences here): refused before training.
    few = vseg("train", shards, str(tmp_path / "run"), *TRAIN_ARGS[:2], "--batch-size", "4", "--logical-cpus", "2")
    assert few.returncode == 1 and "3 val sequence(s), fewer than the global batch of 4" in few.stderr, few.stderr
    assert not (tmp_path / "run").exists()
    unknown = invoke("train", shards, str(tmp_path / "run"), "--model", "vanilla-lstm-small")
    assert unknown.exit_code == 1 and "Unknown model" in unknown.output
    bad_model = invoke("evaluate", str(tmp_path / "missing.keras"), shards)
    assert bad_model.exit_code == 1 and "no such model file" in bad_model.output


def test_a_size_that_breaks_the_size_rule_is_one_line_before_training(shards, tmp_path):
    from vseg_keras.train import train

    run_dir = tmp_path / "run"
    crop = invoke("train", shards, str(run_dir), "--model", MODEL, "--crop", "63x128")
    assert crop.exit_code == 1 and crop.output.strip().splitlines() == [
        f"Error: --crop 63x128 (HxW) is not supported: {frame_size_requirement(4, 4)}."]
    garbage = invoke("train", shards, str(run_dir), "--model", MODEL, "--crop", "63by128")
    assert garbage.exit_code == 2 and "expected HEIGHTxWIDTH such as 512x1024, got '63by128'" in garbage.output
    # Full frames that break the rule (a manifest of 62x124 frames): named with the data folder, before
    # anything is built or written.
    odd = tmp_path / "odd"
    odd.mkdir()
    manifest = json.loads((Path(shards) / "manifest.json").read_text())
    (odd / "manifest.json").write_text(json.dumps({**manifest, "height": 62, "width": 124}))
    with pytest.raises(ValueError) as error:
        train(str(odd), str(run_dir), TrainConfig(model=MODEL))
    assert str(error.value) == f"{odd}: train frames 62x124 (HxW) is not supported: {frame_size_requirement(4, 4)}."
    # Windows longer than the snippets hold: refused before the run dir is written.
    with pytest.raises(ValueError, match=r"^seq_len 40 exceeds the 30 frames stored per snippet"):
        train(shards, str(run_dir), TrainConfig(model=MODEL, seq_len=40))
    with pytest.raises(ValueError, match=r"^context 25 needs 25 stored frames before the labelled one"):
        train(shards, str(run_dir), TrainConfig(model=MODEL, val_context=25))
    assert not run_dir.exists()


def test_the_multi_worker_loop_still_has_keras_private_symbolic_build():
    """The loop for keras-team/keras#20585 builds with Keras' private Model._symbolic_build: fail loudly without it."""
    import numpy as np

    from vseg_keras.datasets.cityscapes import CITYSCAPES
    from vseg_keras.train.multi_worker import symbolic_build
    from vseg_keras.train.recipe import build_training_model

    assert hasattr(keras.Model, "_symbolic_build"), (
        f"Keras {keras.__version__} removed Model._symbolic_build: vseg_keras/train/multi_worker.py needs another "
        "way to build metrics and optimizer (or Keras' fit now runs MultiWorkerMirroredStrategy: keras#20585)")
    model = build_training_model(TrainConfig(model=MODEL), CITYSCAPES)
    symbolic_build(model, (np.zeros((1, 2, 32, 64, 3), np.uint8), np.zeros((1, 32, 64), np.uint8)))
    assert model.built and model.optimizer.built and model.metrics[-1].built


def test_train_resume_evaluate_and_export_on_another_filesystem(shards, tmp_path):
    """Data, run dir, reports and exports on TensorFlow's in-memory ram:// filesystem, in one process."""
    import dataclasses
    import uuid

    import tensorflow as tf

    from vseg_keras import files
    from vseg_keras.evaluate import evaluate_to_files
    from vseg_keras.export import export_saved_model
    from vseg_keras.train import train

    root = f"ram://vseg-{uuid.uuid4().hex}"
    data_dir, run_dir = f"{root}/data", f"{root}/run"
    files.makedirs(data_dir)
    for name in os.listdir(shards):
        tf.io.gfile.copy(os.path.join(shards, name), f"{data_dir}/{name}")
    config = TrainConfig(model="vanilla-clstm-small-shallow", epochs=1, batch_size=2, seq_len=3, crop=(32, 64),
                         steps_per_epoch=2, val_context=2)  # a ConvLSTM: two states per level, resumed
    lines = []
    assert train(data_dir, run_dir, config, log=lines.append, verbose=0)["epochs_done"] == 1
    assert files.listdir(run_dir) == ["backup", "best.keras", "config.json", "history.csv", "last.keras", "logs"]
    summary = train(data_dir, run_dir, dataclasses.replace(config, epochs=2), log=lines.append, verbose=0)
    assert summary["epochs_done"] == 2 and summary["best_model"] == f"{run_dir}/best.keras"
    assert f"resuming at epoch 2, step 0 (of 2) from {run_dir}/backup" in lines
    assert [row.split(",")[0] for row in files.read_text(f"{run_dir}/history.csv").splitlines()] == ["epoch", "0", "1"]
    assert files.listdir(f"{run_dir}/backup") == ["epoch-00002.weights.h5", "state.json"]

    model = load_trained_model(run_dir)
    report = evaluate_to_files(model, data_dir, f"{root}/eval", report_path=f"{root}/report.json", context=2,
                               save_predictions=f"{root}/pred", progress=False, with_temporal_consistency=False)
    assert files.listdir(f"{root}/eval") == ["confusion_matrix.png", "report.json"]
    assert files.read_json(f"{root}/report.json")["miou"] == report["miou"]
    assert len(files.listdir(f"{root}/pred")) == 3
    path = export_saved_model(model, out_dir=f"{root}/export")
    assert path == f"{root}/export/1" and files.listdir(f"{root}/export") == ["1"]
    served = tf.saved_model.load(path).signatures["serving_default"](frames=tf.zeros([1, 2, 32, 64, 3], tf.uint8))
    assert served["labels"].shape == (1, 2, 32, 64)
    # A damaged run dir (the resume state's weights gone) is one line naming the file.
    files.remove(f"{run_dir}/backup/epoch-00002.weights.h5")
    with pytest.raises(TrainingError, match="epoch-00002.weights.h5: missing, but backup/state.json resumes from it"):
        train(data_dir, run_dir, dataclasses.replace(config, epochs=3), log=lines.append, verbose=0)


def test_frame_wise_models_train_on_single_frames():
    assert TrainConfig(model="resnet-none-small-shallow", seq_len=5).seq_len == 1
    assert TrainConfig(model="resnet-none-small-shallow").val_context == 0
    assert TrainConfig(model="resnet-cgru-small-shallow").val_context == 4
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        TrainConfig(model=MODEL, batch_size=0)


def test_nan_loss_stops_with_a_clear_error(shards, tmp_path):
    from vseg_keras.train import train

    with pytest.raises(TrainingError, match="loss became NaN/inf at epoch 1, batch .*; no epoch finished"):
        train(shards, str(tmp_path / "run"),
              TrainConfig(model=MODEL, epochs=1, batch_size=2, seq_len=2, crop=(32, 64), steps_per_epoch=2,
                           lr=1e30), log=lambda line: None, verbose=0)
    keras.backend.clear_session()
    # The diverged weights were not committed: nothing to resume from, no model files.
    assert read_resume_state(str(tmp_path / "run")) == {}
    assert not (tmp_path / "run" / "last.keras").exists()


def test_mixed_precision_trains_in_bfloat16_on_cpu_with_user_callbacks_and_restores_the_policy(shards, tmp_path):
    from vseg_keras.train import train

    lines: list[str] = []
    batches: list[tuple[int, str]] = []  # a user's callback sees every batch, with vseg's own callbacks

    def batch_end(batch, logs):
        batches.append((batch, keras.mixed_precision.global_policy().name))

    train(shards, str(tmp_path / "run"),
          TrainConfig(model=MODEL, epochs=1, batch_size=2, seq_len=2, crop=(32, 64), steps_per_epoch=2,
                      val_steps=1, mixed_precision=True), log=lines.append, verbose=0,
          callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=batch_end)])
    assert "mixed precision: mixed_bfloat16" in lines
    assert batches == [(0, "mixed_bfloat16"), (1, "mixed_bfloat16")]
    assert keras.mixed_precision.global_policy().name == "float32"
    model = load_trained_model(str(tmp_path / "run"))  # float32 weights, loads as a float32 model
    assert model.backbone.cells[0].dtype_policy.name == "float32"
    keras.backend.clear_session()


@pytest.mark.parametrize("full_windows", [False, True])
def test_gradient_accumulation_updates_every_k_batches(full_windows):
    import numpy as np

    from vseg_keras import build_model
    from vseg_keras.models.training_model import TrainingModel
    from vseg_keras.train import compile_for_training

    model = TrainingModel(build_model(MODEL, seed=0), "sequence" if full_windows else "last_frame")
    compile_for_training(model, TrainConfig(model=MODEL, grad_accum=2, lr=1e-2))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(1, 2, 16, 16, 3), dtype=np.uint8)
    labels = rng.integers(0, 19, size=(1, 2, 16, 16) if full_windows else (1, 16, 16), dtype=np.uint8)
    kernel = model.segmenter.head.kernel
    before = kernel.numpy().copy()
    model.train_on_batch(frames, labels)
    after_one = kernel.numpy().copy()
    model.train_on_batch(frames, labels)
    assert np.array_equal(before, after_one)  # accumulated, not applied
    assert not np.array_equal(after_one, kernel.numpy())  # applied on the 2nd batch
    keras.backend.clear_session()


def test_loss_and_metrics_skip_unlabelled_frames_with_the_same_values_and_gradients():
    import numpy as np
    import tensorflow as tf

    from vseg_keras import build_model
    from vseg_keras.train import compile_for_training

    model = build_model(MODEL, seed=0)
    compile_for_training(model, TrainConfig(model=MODEL))
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 20, size=(2, 4, 16, 16), dtype=np.uint8)
    labels[0, [0, 1, 3]] = 255  # one labelled frame per window, as the pipeline makes them
    labels[1, [0, 1, 2]] = 255
    labels[1, 3, :5] = 255  # partly unlabelled
    logits = tf.constant(rng.normal(size=(2, 4, 16, 16, 20)).astype("float32"))

    kept_labels, kept_logits = model.labelled_frames(labels, logits)
    assert kept_labels.shape == (2, 16, 16) and kept_logits.shape == (2, 16, 16, 20)
    np.testing.assert_array_equal(kept_labels, labels[[0, 1], [2, 3]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        ours = model.compute_loss(y=labels, y_pred=logits)
        keras_loss = keras.Model.compute_loss(model, y=labels, y_pred=logits)  # on every frame
    np.testing.assert_allclose(ours, keras_loss, rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(ours, logits), tape.gradient(keras_loss, logits), atol=1e-8)
    ours_miou = model.compute_metrics(None, labels, logits)["miou"]
    model.reset_metrics()
    np.testing.assert_allclose(ours_miou, keras.Model.compute_metrics(model, None, labels, logits)["miou"], rtol=1e-6)

    # Left alone with sample weights and under XLA (static shapes).
    assert model.labelled_frames(labels, logits, sample_weight=np.ones(2))[0].shape == labels.shape
    model.compile(loss=model.loss, jit_compile=True)
    assert model.labelled_frames(labels, logits)[0].shape == labels.shape
    keras.backend.clear_session()


def test_full_windows_and_a_run_dir_from_before_causal_windows_resume(shards, tmp_path):
    from vseg_keras.train import train

    run_dir = tmp_path / "run"
    options = dict(model=MODEL, batch_size=2, seq_len=3, crop=(32, 64), steps_per_epoch=2, val_steps=1)
    lines: list[str] = []
    train(shards, str(run_dir), TrainConfig(epochs=1, full_windows=True, **options), log=lines.append, verbose=0)
    keras.backend.clear_session()
    assert "windows: full, 3 frames, decoder on every frame" in lines
    # A run dir written before the switch existed (trained on full windows) resumes with causal windows.
    config = json.loads((run_dir / "config.json").read_text())
    del config["options"]["full_windows"]
    (run_dir / "config.json").write_text(json.dumps(config))
    lines.clear()
    train(shards, str(run_dir), TrainConfig(epochs=2, **options), log=lines.append, verbose=0)
    keras.backend.clear_session()
    assert "resuming at epoch 2, step 0" in " ".join(lines) and history_epochs(run_dir) == [0, 1]
    assert json.loads((run_dir / "config.json").read_text())["options"]["full_windows"] is False


@pytest.mark.parametrize("name", ["convnext-cgru-small-shallow", "resnet-crnn-small-shallow",
                                  "vanilla-none-small-shallow"])
def test_evaluation_without_temporal_consistency_reports_the_same_scores(shards, name):
    from vseg_keras import build_model
    from vseg_keras.evaluate import evaluate

    model = build_model(name, seed=2)
    full = evaluate(model, shards, context=3, progress=False)
    scored_only = evaluate(model, shards, context=3, progress=False, with_temporal_consistency=False)
    assert 0 <= full["temporal_consistency"] <= 1 and full["temporal_consistency_flow"] == "dis"
    assert all(scored_only.pop(key) is None and full.pop(key) is not None for key in TC_KEYS)
    assert scored_only == full
    keras.backend.clear_session()


def test_float16_policy_of_gpus_trains_with_loss_scaling():
    """What ``--mixed-precision`` picks on a GPU (mixed_float16): Keras' loss scaling wraps Adam
    (and keeps gradient accumulation); float16 kernels run on CPU too, so the step is checked here."""
    import numpy as np

    from vseg_keras import build_model
    from vseg_keras.train import compile_for_training

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(MODEL, seed=0)
        compile_for_training(model, TrainConfig(model=MODEL, grad_accum=2))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert model.optimizer.inner_optimizer.gradient_accumulation_steps == 2
        frames = np.random.default_rng(0).integers(0, 256, size=(1, 2, 16, 16, 3), dtype=np.uint8)
        labels = np.full((1, 2, 16, 16), 255, np.uint8)
        labels[:, 1] = 3
        loss, _ = model.train_on_batch(frames, labels)
        assert np.isfinite(loss)
        assert model.head.kernel.dtype == "float32"  # weights stay float32
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()


def test_training_logs_whether_the_step_runs_vseg_compiled_cpu_ops():
    """On a CPU the log says whether the training step runs vseg's compiled ops (built then, on first use) and
    where they are, or why not (--jit: XLA compiles the step, which cannot hold them), under --mixed-precision
    and in float32."""
    from vseg_keras.models.kernels import tensorflow_ops
    from vseg_keras.train.recipe import precision_policy

    for mixed in (True, False):
        lines: list[str] = []
        with precision_policy(TrainConfig(model="vanilla-crnn-small-shallow", mixed_precision=mixed), lines.append):
            assert keras.mixed_precision.global_policy().name == ("mixed_bfloat16" if mixed else "float32")
        assert lines[:1] == (["mixed precision: mixed_bfloat16"] if mixed else [tensorflow_ops.describe_cpu_ops()])
        assert [line for line in lines if line.startswith("compiled CPU ops")] == [tensorflow_ops.describe_cpu_ops()]
        assert "cpu_ops-" in lines[-1]  # built here: the test machine has a compiler
    lines = []
    with precision_policy(TrainConfig(model="vanilla-crnn-small-shallow", jit=True), lines.append):
        pass
    assert lines == ["compiled CPU ops: not used (--jit: XLA compiles the whole step)"]
    assert keras.mixed_precision.global_policy().name == "float32"
