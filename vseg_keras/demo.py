"""The one-command demo: synthetic data -> two models -> evaluation -> export -> a segmented video.

Runs on the built-in synthetic memory task (no dataset needed): a recurrent model and its
frame-wise twin are trained with the same data, budget and seed, evaluated side by side
(mIoU, temporal consistency), the recurrent one is exported for TF Serving and segments a
held-out synthetic video. Every step is resumable: running the demo again after an
interruption continues where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from vseg_keras.evaluate import evaluate_to_files
from vseg_keras.export import export_saved_model, latest_version
from vseg_keras.files import atomic_write_json
from vseg_keras.loading import load_trained_model
from vseg_keras.predict import predict_video
from vseg_keras.train import TrainConfig, train

TEMPORAL_MODEL = "vanilla-cgru-small-shallow"
BASELINE_MODEL = "vanilla-none-small-shallow"


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo. ``full()`` is the README's default (about 7 minutes on 2 CPU cores)."""

    train_sequences: int
    val_sequences: int
    height: int
    width: int
    epochs: int
    steps_per_epoch: int
    batch_size: int = 4
    seq_len: int = 5
    lr: float = 1e-3

    @classmethod
    def full(cls) -> DemoSettings:
        return cls(train_sequences=48, val_sequences=12, height=64, width=128, epochs=24, steps_per_epoch=12)

    @classmethod
    def quick(cls) -> DemoSettings:
        """A smoke run for CI: every step, tiny sizes; the models barely train."""
        return cls(train_sequences=4, val_sequences=2, height=64, width=128, epochs=1, steps_per_epoch=2,
                   batch_size=2, seq_len=3)


def run_demo(out_dir: str = "demo", quick: bool = False, log: Callable[[str], None] = print) -> dict:
    """Runs the demo into ``out_dir`` and writes ``out_dir/report.json``.

    Args:
        out_dir: where everything goes (``src/`` synthetic Cityscapes, ``data/`` shards,
            ``runs/`` the two training runs, ``eval/``, ``saved_models/``, ``heldout_overlay.mp4``).
        quick: tiny sizes for a smoke test (no claim about which model wins).
        log: where progress lines go.

    Returns:
        The report: ``temporal`` and ``baseline`` (each an evaluation report), ``artefacts``
        (paths), ``temporal_ahead`` (mIoU and TC both higher for the recurrent model).
    """
    from data_tools.convert import convert_cityscapes
    from data_tools.synth import make_synthetic_cityscapes

    if "://" in out_dir:  # it segments a video with OpenCV, which writes local files only
        raise ValueError(f"{out_dir}: the demo writes to a local folder; give a local --out")
    settings = DemoSettings.quick() if quick else DemoSettings.full()
    source, data_dir = os.path.join(out_dir, "src"), os.path.join(out_dir, "data")
    log(f"1/5 synthetic Cityscapes-layout video set -> {source}")
    make_synthetic_cityscapes(source, train_sequences=settings.train_sequences, val_sequences=settings.val_sequences,
                              test_sequences=1, height=settings.height, width=settings.width, seed=0, overwrite=True)
    log(f"2/5 convert to TFRecord shards -> {data_dir}")
    convert_cityscapes(source, data_dir, height=settings.height, width=settings.width, progress=False)

    reports, runs = {}, {}
    for role, model in (("temporal", TEMPORAL_MODEL), ("baseline", BASELINE_MODEL)):
        runs[role] = os.path.join(out_dir, "runs", model)
        log(f"3/5 train {model} ({role}) -> {runs[role]}")
        config = TrainConfig(model=model, epochs=settings.epochs, batch_size=settings.batch_size,
                             seq_len=settings.seq_len, lr=settings.lr, steps_per_epoch=settings.steps_per_epoch)
        train(data_dir, runs[role], config, log=log)
        log(f"4/5 evaluate {model}")
        reports[role] = evaluate_to_files(load_trained_model(runs[role]), data_dir,
                                          os.path.join(out_dir, "eval", model),
                                          context=settings.seq_len - 1, progress=False)

    log("5/5 export the temporal model and segment a held-out synthetic video")
    temporal = load_trained_model(runs["temporal"])
    export_base = os.path.join(out_dir, "saved_models", temporal.name)
    latest = latest_version(export_base)  # a re-run reuses the export instead of adding versions
    exported = os.path.join(export_base, str(latest)) if latest else export_saved_model(temporal, out_dir=export_base)
    test_root = os.path.join(source, "leftImg8bit_sequence", "test")
    heldout = os.path.join(test_root, sorted(os.listdir(test_root))[0])
    video = os.path.join(out_dir, "heldout_overlay.mp4")
    predict_video(export_base, heldout, video, progress=False)

    report = {
        "temporal": reports["temporal"],
        "baseline": reports["baseline"],
        "temporal_ahead": bool(
            reports["temporal"]["miou"] > reports["baseline"]["miou"]
            and reports["temporal"]["temporal_consistency"] > reports["baseline"]["temporal_consistency"]
        ),
        "quick": quick,
        "artefacts": {"data": data_dir, "runs": runs, "saved_model": exported, "video": video,
                      "eval": os.path.join(out_dir, "eval")},
    }
    atomic_write_json(os.path.join(out_dir, "report.json"), report)
    return report


def format_comparison(report: dict) -> str:
    """Side-by-side table of the demo's two models."""
    rows = [("mIoU (Cityscapes)", "miou"), ("temporal consistency", "temporal_consistency"),
            ("pixel accuracy", "pixel_accuracy"), ("paper-style mIoU (20)", "paper_miou_20")]
    lines = [f"{'':<24} {TEMPORAL_MODEL:>28} {BASELINE_MODEL:>28}"]
    for label, key in rows:
        values = [report[role][key] for role in ("temporal", "baseline")]
        lines.append(f"{label:<24} " + " ".join(f"{100 * (v or 0):>28.2f}" for v in values))
    return "\n".join(lines)
