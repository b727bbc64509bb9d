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

import cv2
import numpy as np

from vseg_keras.evaluate import evaluate_to_files
from vseg_keras.export import export_saved_model, latest_version
from vseg_keras.files import atomic_write_json, atomic_write_png, read_json
from vseg_keras.frame_segmenter import FrameSegmenter, plan_for, segment_frame
from vseg_keras.loading import load_trained_model
from vseg_keras.predict import predict_video
from vseg_keras.render import enlarge, legend_panel, titled_grid
from vseg_keras.train import TrainConfig, train

TEMPORAL_MODEL = "vanilla-cgru-small-shallow"
BASELINE_MODEL = "vanilla-none-small-shallow"
ROLE_NAMES = {"temporal": "temporal", "baseline": "frame-wise"}
#: The held-out video and the comparison picture are drawn this many times larger than the 64x128 frames.
VIDEO_SCALE = 4
PICTURE_SCALE = 3
#: Val clips in the comparison picture (the first ones by name).
PICTURE_CLIPS = 4


class _Steps:
    """Logs ``k/n text`` for consecutive steps."""

    def __init__(self, log: Callable[[str], None], total: int):
        self.log, self.total, self.done = log, total, 0

    def __call__(self, text: str) -> None:
        self.done += 1
        self.log(f"{self.done}/{self.total} {text}")


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
    step = _Steps(log, 7)
    step(f"synthetic Cityscapes-layout video set -> {source}")
    make_synthetic_cityscapes(source, train_sequences=settings.train_sequences, val_sequences=settings.val_sequences,
                              test_sequences=1, height=settings.height, width=settings.width, seed=0, overwrite=True)
    step(f"convert to TFRecord shards -> {data_dir}")
    convert_cityscapes(source, data_dir, height=settings.height, width=settings.width, progress=False)

    roles = {"temporal": TEMPORAL_MODEL, "baseline": BASELINE_MODEL}
    runs = {role: os.path.join(out_dir, "runs", model) for role, model in roles.items()}
    for role, model in roles.items():
        step(f"train {model} ({ROLE_NAMES[role]}) -> {runs[role]}")
        config = TrainConfig(model=model, epochs=settings.epochs, batch_size=settings.batch_size,
                             seq_len=settings.seq_len, lr=settings.lr, steps_per_epoch=settings.steps_per_epoch)
        train(data_dir, runs[role], config, log=log)
    step("evaluate both on the val split (mIoU, temporal consistency)")
    reports = {role: _evaluation(runs[role], data_dir, os.path.join(out_dir, "eval", model), settings.seq_len - 1)
               for role, model in roles.items()}

    step("export the temporal model for TF Serving")
    temporal = load_trained_model(runs["temporal"])
    export_base = os.path.join(out_dir, "saved_models", temporal.name)
    latest = latest_version(export_base)  # a re-run reuses the export instead of adding versions
    exported = os.path.join(export_base, str(latest)) if latest else export_saved_model(temporal, out_dir=export_base)
    step("segment a held-out video; draw both models on the same val frames")
    test_root = os.path.join(source, "leftImg8bit_sequence", "test")
    heldout = os.path.join(test_root, sorted(os.listdir(test_root))[0])
    video = os.path.join(out_dir, "heldout_overlay.mp4")
    predict_video(export_base, heldout, video, progress=False, side_by_side=True, scale=VIDEO_SCALE)
    picture = os.path.join(out_dir, "comparison.png")
    write_comparison_picture(picture, runs, source)

    report = {
        "temporal": reports["temporal"],
        "baseline": reports["baseline"],
        "temporal_ahead": bool(
            reports["temporal"]["miou"] > reports["baseline"]["miou"]
            and reports["temporal"]["temporal_consistency"] > reports["baseline"]["temporal_consistency"]
        ),
        "quick": quick,
        "artefacts": {"data": data_dir, "runs": runs, "saved_model": exported, "video": video,
                      "comparison": picture, "eval": os.path.join(out_dir, "eval")},
    }
    atomic_write_json(os.path.join(out_dir, "report.json"), report)
    return report


def _evaluation(run_dir: str, data_dir: str, eval_dir: str, context: int) -> dict:
    """The evaluation report of the run's best model: the one in ``eval_dir`` if it is newer than the model
    (a re-run of the demo), else evaluated now."""
    report, model = os.path.join(eval_dir, "report.json"), os.path.join(run_dir, "best.keras")
    if os.path.exists(report) and os.path.getmtime(report) >= os.path.getmtime(model):
        return read_json(report)
    return evaluate_to_files(load_trained_model(run_dir), data_dir, eval_dir, context=context, progress=False)


def format_comparison(report: dict) -> str:
    """Side-by-side table of the demo's two models."""
    rows = [("mIoU (Cityscapes)", "miou"), ("temporal consistency", "temporal_consistency"),
            ("pixel accuracy", "pixel_accuracy"), ("paper-style mIoU (20)", "paper_miou_20")]
    lines = [f"{'':<24} {TEMPORAL_MODEL:>28} {BASELINE_MODEL:>28}"]
    for label, key in rows:
        values = [report[role][key] for role in ("temporal", "baseline")]
        lines.append(f"{label:<24} " + " ".join(f"{100 * (v or 0):>28.2f}" for v in values))
    return "\n".join(lines)


def write_comparison_picture(path: str, runs: dict[str, str], source: str, clips: int = PICTURE_CLIPS,
                             scale: int = PICTURE_SCALE) -> None:
    """Draws the demo's two models on the same frames: the labelled frame of the first ``clips`` val clips of
    the synthetic Cityscapes set ``source``, each model streamed over the clip up to that frame. Rows: the
    frame, the ground truth, the temporal model, the frame-wise model; a legend of the ground truth's classes.

    Args:
        path: the PNG to write.
        runs: ``{"temporal": run_dir, "baseline": run_dir}``.
        source: the synthetic Cityscapes root (``leftImg8bit_sequence/val``, ``gtFine/val``).
        clips: how many val clips (columns).
        scale: enlargement of each tile.
    """
    from vseg_keras.datasets.cityscapes import CITYSCAPES, LABEL_TO_TRAIN

    labelled = _labelled_val_frames(source)[:clips]
    frames = [cv2.cvtColor(cv2.imread(frame), cv2.COLOR_BGR2RGB) for frame, _, _ in labelled]
    truth = [LABEL_TO_TRAIN[cv2.imread(label, cv2.IMREAD_UNCHANGED)] for _, label, _ in labelled]
    rows = [("frame", [enlarge(f, scale) for f in frames]),
            ("ground truth", [enlarge(CITYSCAPES.colorize(t), scale, nearest=True) for t in truth])]
    for role in ("temporal", "baseline"):
        segmenter = FrameSegmenter(runs[role])
        predictions = [_last_prediction(segmenter, clip) for _, _, clip in labelled]
        rows.append((ROLE_NAMES[role], [enlarge(CITYSCAPES.colorize(p), scale, nearest=True) for p in predictions]))
    picture = titled_grid(rows)
    legend = legend_panel(picture.shape[0], sorted({int(c) for t in truth for c in np.unique(t)
                                                    if c < CITYSCAPES.num_classes}), CITYSCAPES)
    atomic_write_png(path, np.concatenate([picture, legend], axis=1)[..., ::-1])


def _labelled_val_frames(source: str) -> list[tuple[str, str, list[str]]]:
    """``(frame, label, clip frames up to it)`` for every labelled val frame of a synthetic Cityscapes set, by name."""
    found = []
    for city in sorted(os.listdir(os.path.join(source, "gtFine", "val"))):
        frames_dir = os.path.join(source, "leftImg8bit_sequence", "val", city)
        names = set(os.listdir(frames_dir))
        for label in sorted(n for n in os.listdir(os.path.join(source, "gtFine", "val", city))
                            if n.endswith("_gtFine_labelIds.png")):
            stem = label.removesuffix("_gtFine_labelIds.png")
            city_sequence, frame_number = stem.rsplit("_", 1)
            first = int(frame_number)
            while f"{city_sequence}_{first - 1:06d}_leftImg8bit.png" in names:  # the consecutive frames before it
                first -= 1
            clip = [os.path.join(frames_dir, f"{city_sequence}_{n:06d}_leftImg8bit.png")
                    for n in range(first, int(frame_number) + 1)]
            found.append((os.path.join(frames_dir, f"{stem}_leftImg8bit.png"),
                          os.path.join(source, "gtFine", "val", city, label), clip))
    return found


def _last_prediction(segmenter: FrameSegmenter, clip: list[str]) -> np.ndarray:
    """Streams ``segmenter`` over the frames of ``clip`` from a fresh state; the last frame's train ids."""
    segmenter.reset()
    images = [cv2.cvtColor(cv2.imread(name), cv2.COLOR_BGR2RGB) for name in clip]
    sizes = plan_for(segmenter, images[0].shape[:2])
    for image in images:
        labels = segment_frame(segmenter, image, sizes)
    return labels
