"""What ``vseg evaluate`` prints and draws: the report as a table, the confusion matrix and context sweeps as PNGs."""

from __future__ import annotations

import io

import numpy as np

from vseg_keras import files
from vseg_keras.datasets import DatasetSpec

#: The summary lines of a report: key, label (``{convention}`` and ``{classes}`` filled in).
_SUMMARY = (
    ("miou", "mIoU ({dataset}, {classes} classes)"),
    ("pixel_accuracy", "pixel accuracy"),
    ("mean_class_accuracy", "mean class accuracy"),
    ("paper_miou_20", "paper-style mIoU (20 incl. void)"),
    ("paper_macc", "paper-style mAcc (pixel acc. incl. void)"),
    ("temporal_consistency", "temporal consistency (ETC-style)"),
    ("mvc8", "mVC8 (VSPW video consistency)"),
    ("mvc16", "mVC16"),
)
_CONVENTIONS = {"union": "classes with TP+FP+FN > 0", "ground_truth": "classes in the ground truth"}
_LABEL_WIDTH = 41


def format_report(report: dict) -> str:
    """A printable table of a report: per-class IoU, then the summary figures (those it has)."""
    width = max([15, *(len(name) for name in report["per_class_iou"])])
    lines = [f"{'class':<{width}} {'IoU':>7}", "-" * (width + 8)]
    for name, iou in report["per_class_iou"].items():
        lines.append(f"{name:<{width}} {'-' if iou is None else f'{100 * iou:6.2f}':>7}")
    lines.append("-" * (width + 8))
    scored = report.get("scored_classes", len(report["per_class_iou"]))
    for key, label in _SUMMARY:
        if key not in report or (key.startswith(("paper", "mvc")) and report[key] is None):
            continue
        label = label.format(dataset=report.get("dataset", "cityscapes"), classes=scored)
        value = report[key]
        lines.append(f"{label:<{_LABEL_WIDTH}} {'-' if value is None else f'{100 * value:6.2f}'}")
    counts = [("context frames", report.get("context")), ("sequences", report["num_sequences"]),
              ("labelled frames scored", report.get("labelled_frames"))]
    lines += [f"{label:<{_LABEL_WIDTH}} {value:>6}" for label, value in counts if value is not None]
    convention = _CONVENTIONS.get(report.get("miou_convention", "union"), "")
    lines.append(f"(mIoU: the mean over scored {convention})")
    return "\n".join(lines)


def plot_confusion_matrix(report: dict, spec: DatasetSpec, path: str) -> None:
    """Row-normalised confusion matrix (the scored classes, plus a void/other column) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = np.flatnonzero(spec.scored)
    confusion = np.asarray(report["confusion_matrix"], dtype=np.float64)[scored][:, [*scored, spec.num_classes]]
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    names = [spec.class_names[c] for c in scored]
    side = min(6 + 0.2 * len(names), 30)
    font = 7 if len(names) <= 40 else 4
    figure, axes = plt.subplots(figsize=(side + 1, side))
    image = axes.imshow(normalised, cmap="viridis", vmin=0, vmax=1)
    axes.set_xticks(range(len(names) + 1), [*names, "void/other"], rotation=90, fontsize=font)
    axes.set_yticks(range(len(names)), names, fontsize=font)
    axes.set_xlabel("prediction")
    axes.set_ylabel("ground truth")
    axes.set_title(f"{report['model']} on {report['split']}: mIoU {100 * (report['miou'] or 0):.2f}")
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    save_figure(figure, path)


def plot_context_sweep(sweep: dict, path: str) -> None:
    """mIoU (and TC) against the number of context frames, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(sweep["contexts"], [100 * (m or 0) for m in sweep["miou"]], "o-", label="mIoU")
    axes.plot(
        sweep["contexts"], [100 * (t or 0) for t in sweep["temporal_consistency"]], "s--", label="temporal consistency"
    )
    axes.set_xlabel("context frames before the labelled frame")
    axes.set_ylabel("%")
    axes.set_title(sweep["model"])
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    save_figure(figure, path)


def save_figure(figure, path: str) -> None:
    """Writes a matplotlib figure as a PNG to ``path`` (any TensorFlow filesystem, atomically), and closes it."""
    import matplotlib.pyplot as plt

    encoded = io.BytesIO()
    figure.savefig(encoded, format="png", dpi=110)
    plt.close(figure)
    files.atomic_write_bytes(path, encoded.getvalue())
