"""Evaluation: the dataset spec's scores, temporal and video consistency, context sweeps, result files.

:func:`evaluate` follows the data's spec (:mod:`vseg_keras.datasets`): its classes, its mIoU convention
and its protocol, either

* ``windows`` (Cityscapes, the report): windows ending at each snippet's labelled frame, after
  ``context`` frames (:mod:`vseg_keras.window_evaluation`); or
* ``stream`` (VSPW, your own videos): every clip streamed from its first frame with the state carried,
  every labelled frame scored, and VSPW's mVC8/mVC16 (:mod:`vseg_keras.clip_evaluation`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from vseg_keras import data, files
from vseg_keras.clip_evaluation import stream_clips
from vseg_keras.datasets import DatasetSpec
from vseg_keras.flow import DEFAULT_FLOW, check_flow_method
from vseg_keras.frame_models import FrameModel, KerasFrameModel, keras_model_spec, model_kind, saved_model_folder
from vseg_keras.frame_segmenter import FrameSegmenter
from vseg_keras.loading import load_trained_model, open_frame_model
from vseg_keras.metrics import segmentation_scores
from vseg_keras.models.segmenter import VideoSegmenter
from vseg_keras.options import EVAL_BATCH_SIZE, EVAL_CONTEXT, EVAL_SPLIT
from vseg_keras.reports import format_report, plot_confusion_matrix, plot_context_sweep  # noqa: F401  (API)
from vseg_keras.window_evaluation import score_windows

#: The report's evaluation window: the labelled frame after 11 frames of context (12 frames).
DEFAULT_CONTEXT = EVAL_CONTEXT


def model_spec(model: VideoSegmenter | FrameModel) -> DatasetSpec:
    """The spec of the dataset ``model`` was trained on (what its file carries)."""
    return model.dataset if isinstance(model, FrameModel) else keras_model_spec(model)


def check_model_fits(model: VideoSegmenter | FrameModel, spec: DatasetSpec, data_dir: str) -> None:
    """Raises ``ValueError`` (one line) unless ``model`` was trained on the classes of the data's ``spec``."""
    trained = model_spec(model)
    if trained.num_logits != spec.num_logits or trained.class_names != spec.class_names:
        raise ValueError(f"{model.name} was trained on {trained.name} ({trained.num_classes} classes) but {data_dir} "
                         f"holds {spec.name} ({spec.num_classes} classes); evaluate it on data of its own classes")


def evaluate(
    model: VideoSegmenter | FrameModel,
    data_dir: str,
    split: str = EVAL_SPLIT,
    context: int = DEFAULT_CONTEXT,
    batch_size: int = EVAL_BATCH_SIZE,
    save_predictions: str | None = None,
    prediction_size: tuple[int, int] | None = None,
    max_sequences: int | None = None,
    progress: bool = True,
    with_temporal_consistency: bool = True,
    flow: str = DEFAULT_FLOW,
) -> dict:
    """Evaluates ``model`` on a converted split, by the protocol of its dataset spec (see the module docstring).

    Metrics come from one confusion matrix over the split (see :mod:`vseg_keras.metrics`).
    Temporal consistency follows ETC/VSPW (:func:`vseg_keras.metrics.temporal_consistency_scores`)
    over every consecutive frame pair the model predicted, labelled or not; its optical flow runs on
    threads beside the model. Without it, the ``windows`` protocol decodes only the scored (last)
    frame of each window (:meth:`~vseg_keras.models.segmenter.VideoSegmenter.last_frame_logits`; a
    frame-wise model computes only that frame), with the same scores.

    A :class:`~vseg_keras.frame_models.FrameModel` (a ``.tflite``/``.onnx`` file or a SavedModel, see
    :func:`open_model_to_evaluate`) runs frame by frame: each window from zero states (a SavedModel the
    ``batch_size`` windows of a batch together, with states per window; an edge file one window at a time),
    or each clip.

    Args:
        model: the model to evaluate: a Keras model, or a frame model.
        data_dir: output folder of ``vseg convert``.
        split: the split (with ground truth).
        context: ``windows``: frames before the labelled one (a frame-wise model's labelled-frame
            prediction does not depend on it, but every frame counts for TC). ``stream``: unused.
        batch_size: ``windows``: windows per forward pass (``stream`` runs one frame at a time).
        save_predictions: folder for predictions: ``windows``: Cityscapes result files,
            ``{frame}_pred_labelIds.png`` of the labelled frames in raw label values; ``stream``: VSPW's
            layout, ``<clip>/<frame>.png`` in train ids (every frame of a clip without labels).
        prediction_size: ``(height, width)`` of saved predictions; default: the source label size.
        max_sequences: evaluate at most this many windows (clips).
        progress: show a progress bar.
        with_temporal_consistency: measure temporal consistency (``None`` in the report otherwise).
        flow: its optical flow (:data:`vseg_keras.flow.FLOW_METHODS`; DIS by default).

    Returns:
        The report: the :func:`~vseg_keras.metrics.segmentation_scores` (``miou``, ``per_class_iou``
        naming every class of the spec, ...), the TC entries, ``mvc8``/``mvc16`` (``stream``; with
        ``mvc8_clips``/``mvc16_clips``), ``num_sequences``, ``labelled_frames``, ``context``, and
        ``dataset``, ``protocol``, ``scored_classes``, ``model``, ``split``, ``confusion_matrix``.

    Raises:
        ValueError: the model was trained on other classes than the data's, or the split has nothing
            to evaluate (one line).
    """
    check_flow_method(flow)
    spec = data.dataset_spec(data_dir)
    check_model_fits(model, spec, data_dir)
    tc_flow = flow if with_temporal_consistency else None
    if spec.protocol == "stream":
        segmenter = FrameSegmenter(model if isinstance(model, FrameModel) else KerasFrameModel(model))
        figures = stream_clips(segmenter, data_dir, split, spec, save_predictions=save_predictions,
                               prediction_size=prediction_size, max_sequences=max_sequences, progress=progress,
                               flow=tc_flow)
        context = None
    else:
        size = data.frame_size(data_dir, split) if isinstance(model, FrameModel) else None
        if size:
            model.check_size(*size, what=f"{data_dir}: frames")
        figures = score_windows(model, data_dir, split, spec, context=int(context), batch_size=batch_size,
                                save_predictions=save_predictions, prediction_size=prediction_size,
                                max_sequences=max_sequences, progress=progress, flow=tc_flow)
    if figures["num_sequences"] == 0:
        raise ValueError(f"{data_dir}: split {split!r} has no labelled sequence to evaluate")
    confusion = figures.pop("confusion")
    report = segmentation_scores(confusion, spec)
    report.update(figures)
    report.update({"context": None if context is None else int(context), "model": model.name, "split": split,
                   "dataset": spec.name, "protocol": spec.protocol, "scored_classes": int(spec.scored.sum()),
                   "confusion_matrix": confusion.tolist()})
    return report


def context_sweep(
    model: VideoSegmenter | FrameModel,
    data_dir: str,
    contexts: Sequence[int],
    **options,
) -> dict:
    """Evaluates once per context length (data of the ``windows`` protocol).

    Returns:
        ``{"model", "contexts", "miou", "temporal_consistency", "reports"}``
        with one entry per context, in the order given.

    Raises:
        ValueError: the data is evaluated streamed (``stream`` protocol), where the context is the whole clip.
    """
    spec = data.dataset_spec(data_dir)
    if spec.protocol != "windows":
        raise ValueError(f"{data_dir}: {spec.name} clips are evaluated streamed from their first frame; a context "
                         "sweep needs windowed data (the cityscapes layout)")
    reports = [evaluate(model, data_dir, context=int(k), **options) for k in contexts]
    return {
        "model": model.name,
        "contexts": [int(k) for k in contexts],
        "miou": [r["miou"] for r in reports],
        "temporal_consistency": [r["temporal_consistency"] for r in reports],
        "reports": reports,
    }


def open_model_to_evaluate(model_path: str, threads: int | None = None) -> VideoSegmenter | FrameModel:
    """The model at ``model_path`` as :func:`evaluate` takes it: a ``.keras`` file or run directory as a Keras
    model (batched), a ``.tflite``/``.onnx`` file or SavedModel as a frame model (``threads``: its CPU threads).

    Raises:
        ValueError, FileNotFoundError, ImportError: one line naming the model, or the package to install.
    """
    if model_kind(model_path) == "keras":
        return load_trained_model(model_path)
    return open_frame_model(model_path, threads=threads)


def default_output_dir(model_path: str) -> str:
    """Where ``vseg evaluate`` writes by default: ``RUN_DIR/eval``; ``<stem>-eval`` beside a model file or
    SavedModel base folder; ``<base>-<version>-eval`` for a SavedModel version folder (outside the base
    folder that TF Serving reads)."""
    path = model_path.rstrip("/")
    if files.isdir(path) and saved_model_folder(path) is None:
        return files.join(path, "eval")
    if files.isfile(files.join(path, "saved_model.pb")) and os.path.basename(path).isdigit():
        return f"{os.path.dirname(path)}-{os.path.basename(path)}-eval"
    return f"{os.path.splitext(path)[0]}-eval"


def evaluate_to_files(
    model: VideoSegmenter | FrameModel,
    data_dir: str,
    out_dir: str,
    contexts: Sequence[int] | None = None,
    report_path: str | None = None,
    **options,
) -> dict:
    """What ``vseg evaluate`` does: evaluate, then write the results into ``out_dir``.

    Without ``contexts``: one :func:`evaluate` (``options`` are its arguments), written
    as ``report.json`` and ``confusion_matrix.png`` (and to ``report_path`` if given).
    With ``contexts``: a :func:`context_sweep`, written as ``context_sweep.json`` and
    ``context_sweep.png``.

    Returns:
        The report, or the sweep.
    """
    files.makedirs(out_dir)
    if contexts:
        options.pop("context", None)
        sweep = context_sweep(model, data_dir, contexts, **options)
        files.atomic_write_json(files.join(out_dir, "context_sweep.json"), sweep)
        plot_context_sweep(sweep, files.join(out_dir, "context_sweep.png"))
        return sweep
    report = evaluate(model, data_dir, **options)
    files.atomic_write_json(files.join(out_dir, "report.json"), report)
    plot_confusion_matrix(report, data.dataset_spec(data_dir), files.join(out_dir, "confusion_matrix.png"))
    if report_path:
        files.atomic_write_json(report_path, report)
    return report
