"""The ``vseg`` command line: a thin click shell over :mod:`vseg_keras`.

Every command parses its arguments and calls one library function; errors
the user can fix are printed as one line with a non-zero exit.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# FFmpeg's own log lines would stand beside ours; OpenCV reads this when it first opens a video.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import fnmatch  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

import click  # noqa: E402

from vseg_keras import options as defaults  # noqa: E402  (imports neither Keras nor TensorFlow)
from vseg_keras.cpu_kernels import CPU_KERNELS, select_cpu_kernels, zoo_name_of  # noqa: E402  (nor this)
from vseg_keras.options import TrainConfig, TrainingError, parse_size  # noqa: E402

TRAIN_DEFAULTS = TrainConfig.defaults()


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    """Click callback: ``HxW`` -> ``(height, width)``, or a usage error naming the option."""
    if value is None:
        return None
    try:
        return parse_size(value, what=param.opts[0])
    except ValueError as error:  # click names the option itself
        raise click.BadParameter(str(error).removeprefix(f"{param.opts[0]}: ")) from None


def size_option(name: str, help_text: str, default: tuple[int, int] | None = None):
    """A ``--name HxW`` option parsed into ``(height, width)``."""
    shown = f"{default[0]}x{default[1]}" if default else None
    return click.option(name, default=shown, show_default=bool(default), metavar="HxW", callback=_size, help=help_text)


def _backup_every(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    """Click callback: ``auto`` -> ``None``, else steps between backups (0: epoch ends only)."""
    if value == "auto":
        return None
    if not value.isdigit():
        raise click.BadParameter(f"expected auto or a number of steps (0: at epoch ends only), got {value!r}")
    return int(value)


def model_argument(command):
    """The MODEL argument: a run directory or a .keras file (predict, evaluate: also a SavedModel or edge file)."""
    return click.argument("model_path", metavar="MODEL", type=click.Path())(command)




threads_option = click.option("--threads", default=None, type=click.IntRange(min=1),
                              help="CPU threads of a .tflite/.onnx model (default: every core for .tflite, "
                                   "ONNX Runtime's own for .onnx).")


def progress_option(help_text: str):
    """``--progress/--no-progress``, on by default."""
    return click.option("--progress/--no-progress", default=True, show_default=True, help=help_text)


def _is_user_error(error: Exception) -> bool:
    """ValueError/OSError/TrainingError of the library, a missing optional package, or a TensorFlow file error
    (``tf.errors.OpError``)."""
    if isinstance(error, (ValueError, OSError, TrainingError)):
        return True
    packages = sys.modules.get("vseg_keras.edge.packages")  # loaded only if the command used it
    if packages is not None and isinstance(error, packages.MissingPackageError):
        return True
    tf = sys.modules.get("tensorflow")  # likewise
    return tf is not None and isinstance(error, tf.errors.OpError)


def cpu_kernels_chosen(task: str):
    """Chooses TensorFlow's CPU kernels for ``task`` (``train`` or ``infer``), the command's model (``--model``,
    or the run directory or ``.keras`` file MODEL names) and ``--cpu-kernels`` (default ``auto``) before
    anything imports TensorFlow (which reads the choice then), i.e. outside :func:`user_errors`."""

    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            model = kwargs.get("model_name") or zoo_name_of(kwargs.get("model_path"))
            select_cpu_kernels(kwargs.get("cpu_kernels", "auto"), model, task)
            return command(*args, **kwargs)

        return wrapper

    return decorate


def user_errors(command):
    """Starts TensorFlow without its start-up log lines (:mod:`vseg_keras.quiet_start`), then runs ``command``,
    turning the library's user errors (see :func:`_is_user_error`) into one ``Error: ...`` line and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from vseg_keras.quiet_start import start_tensorflow_quietly

        start_tensorflow_quietly()
        try:
            return command(*args, **kwargs)
        except Exception as error:
            if not _is_user_error(error):
                raise
            failure = click.ClickException(str(error).strip().splitlines()[0])
            failure.exit_code = getattr(error, "exit_code", 1)  # e.g. 75 after a training stopped by a signal
            raise failure from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vseg")
def main() -> None:
    """vseg: video semantic segmentation with recurrent UNets."""


@main.command()
@click.argument("patterns", nargs=-1)
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Text table or a JSON list of objects.")
@click.option("--flops/--no-flops", default=True, show_default=True,
              help="Count GFLOPs per frame (about a second per model).")
@size_option("--flops-size", "Frame size for the GFLOPs column.", default=defaults.FRAME_SIZE)
@click.option("--num-classes", default=defaults.NUM_CLASSES, show_default=True, type=click.IntRange(min=1),
              help="Logits per pixel (the report's 19 Cityscapes classes + void, as in Table 3).")
@user_errors
def models(patterns, output_format, flops, flops_size, num_classes):
    """List the model zoo: name, trainable parameters, GFLOPs per frame.

    PATTERNS are optional names or shell-style patterns, e.g. 'resnet-*-small-deep'.
    """
    from vseg_keras import list_models
    from vseg_keras.model_info import describe_models, format_model_table

    height, width = flops_size
    names = list_models()
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if not names:
            raise click.ClickException(
                f"no model matches {' '.join(patterns)}; `vseg models` lists them all"
            )
    rows = describe_models(names, num_classes=num_classes, flops=flops, height=height, width=width)
    if flops and rows and rows[0]["gflops"] is None:
        click.echo("note: GFLOPs are counted by TensorFlow's graph profiler; set KERAS_BACKEND=tensorflow "
                   "for that column", err=True)
    if output_format == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(format_model_table(rows))


def _layout_sizes(sizes: dict) -> str:
    return ", ".join(f"{layout} {height}x{width}" for layout, (height, width) in sizes.items())


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--layout", default=defaults.SYNTH_LAYOUTS[0], show_default=True,
              type=click.Choice(defaults.SYNTH_LAYOUTS),
              help="cityscapes: 30-frame snippets labelled on the 20th frame; vspw: VSPW_480p videos labelled on "
                   "every frame; folders: your-own-data layout, labelled on every third frame.")
@click.option("--train-sequences", default=defaults.SYNTH_SEQUENCES["train"], show_default=True,
              type=click.IntRange(min=0), help="Clips (snippets, videos) in the train split.")
@click.option("--val-sequences", default=defaults.SYNTH_SEQUENCES["val"], show_default=True,
              type=click.IntRange(min=0), help="Clips in the val split.")
@click.option("--test-sequences", default=defaults.SYNTH_SEQUENCES["test"], show_default=True,
              type=click.IntRange(min=0), help="Clips in the test split (unlabelled; Cityscapes: dummy all-0 labels).")
@click.option("--height", default=None, type=click.IntRange(min=32),
              help=f"Frame height in pixels. [default: {_layout_sizes(defaults.SYNTH_FRAME_SIZES)}]")
@click.option("--width", default=None, type=click.IntRange(min=64), help="Frame width in pixels.")
@click.option("--frames", "clip_frames", default=defaults.SYNTH_CLIP_FRAMES, show_default=True,
              type=click.IntRange(min=4), help="Frames per clip (vspw, folders; Cityscapes snippets hold 30).")
@click.option("--seed", default=defaults.SYNTH_SEED, show_default=True, type=click.IntRange(min=0),
              help="Random seed; the same seed gives byte-identical files.")
@click.option("--objects", default=",".join(map(str, defaults.SYNTH_OBJECTS)), show_default=True,
              callback=lambda _ctx, _param, text: _int_pair(text), help="Moving objects per clip: MIN,MAX.")
@click.option("--overwrite", is_flag=True, help="Replace a synthetic dataset already in OUT_DIR.")
@user_errors
def synth(out_dir, layout, train_sequences, val_sequences, test_sequences, height, width, clip_frames, seed,
          objects, overwrite):
    """Write a synthetic video dataset in a layout `vseg convert` reads.

    Moving vehicles, pedestrians and cycles look alike ("cloaked") from 1-3 frames before each clip's
    key labelled frame on, so labelling them needs memory of earlier frames. Convert it with
    `vseg convert OUT_DIR DATA_DIR` (add --keep-size for the cityscapes layout).
    """
    import time

    from data_tools.synth import make_synthetic_dataset

    started = time.perf_counter()
    summary = make_synthetic_dataset(
        out_dir, layout=layout, train_sequences=train_sequences, val_sequences=val_sequences,
        test_sequences=test_sequences, height=height, width=width, seed=seed, clip_frames=clip_frames,
        overwrite=overwrite, objects=objects,
    )
    counts = ", ".join(f"{split} {info['snippets']}" for split, info in summary["splits"].items())
    click.echo(f"Wrote a synthetic {layout}-layout dataset ({summary['height']}x{summary['width']}, seed {seed}) "
               f"to {summary['root']}: {counts} clips in {time.perf_counter() - started:.1f} s")


@main.command()
@click.argument("root", type=click.Path(file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--layout", default=defaults.LAYOUTS[0], show_default=True, type=click.Choice(defaults.LAYOUTS),
              help="The source layout; auto tells it from what ROOT holds.")
@click.option("--splits", default=",".join(defaults.CONVERT_SPLITS), show_default=True, metavar="LIST",
              help="Comma-separated splits to convert (a split without labels is stored unlabelled).")
@click.option("--height", default=None, type=click.IntRange(min=1),
              help=f"Stored frame height (frames: area interpolation, labels: nearest neighbour). "
                   f"[default: cityscapes {defaults.FRAME_SIZE[0]}x{defaults.FRAME_SIZE[1]}; vspw and folders "
                   "keep each frame's size]")
@click.option("--width", default=None, type=click.IntRange(min=1), help="Stored frame width (with --height).")
@click.option("--keep-size", is_flag=True,
              help="Store frames and labels at their original size (frame files copied as they are).")
@click.option("--frames-before", default=None, type=click.IntRange(min=0),
              help=f"cityscapes: frames stored before the labelled frame. [default: {defaults.FRAMES_BEFORE}]")
@click.option("--frames-after", default=None, type=click.IntRange(min=0),
              help=f"cityscapes: frames stored after the labelled frame. [default: {defaults.FRAMES_AFTER}]")
@click.option("--shards", default=None, type=click.IntRange(min=1),
              help="Shards per split (at most one per snippet). [default: about 256 MB each]")
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="Worker threads for PNG decoding/resizing/encoding. [default: all cores]")
@click.option("--overwrite", is_flag=True, help="Delete an earlier conversion in OUT_DIR and start over.")
@click.option("--skip-bad", is_flag=True,
              help="Skip clips with a missing or corrupt file and list them in the manifest.")
@click.option("--compress", is_flag=True, help="GZIP-compress the shards (.tfrecord.gz).")
@progress_option("Progress bar with snippets/s (shown on a terminal only).")
@user_errors
def convert(root, out_dir, layout, splits, height, width, keep_size, frames_before, frames_after, shards,
            workers, overwrite, skip_bad, compress, progress):
    """Convert a video dataset to TFRecord shards: Cityscapes, VSPW, or your own labelled videos.

    ROOT is the dataset: the Cityscapes root (`leftImg8bit_sequence/`, `gtFine/`; each labelled frame
    gives one 30-frame snippet), the VSPW_480p root (`train.txt`, `label_num_dic_final.json`, `data/`), or
    your own (`dataset.json`, `<split>/<clip>/frames/` and `labels/`). OUT_DIR receives the shards and
    `manifest.json`, which holds the dataset's classes, colours and label map.
    An interrupted run resumes when re-run with the same settings.
    """
    import time

    from data_tools.convert import convert_dataset

    started = time.perf_counter()
    manifest = convert_dataset(
        root, out_dir, layout=layout, splits=splits, height=height, width=width, keep_size=keep_size,
        frames_before=frames_before, frames_after=frames_after, shards=shards, workers=workers,
        overwrite=overwrite, skip_bad=skip_bad, compress=compress, progress=progress,
    )
    size = "original size" if manifest["height"] is None else f"{manifest['height']}x{manifest['width']}"
    click.echo(f"Converted {manifest['layout']} ({manifest['dataset']['name']}, "
               f"{len(manifest['dataset']['classes'])} classes) to {out_dir} ({size}) "
               f"in {time.perf_counter() - started:.1f} s:")
    for split, info in manifest["splits"].items():
        megabytes = sum(shard["bytes"] for shard in info["shards"]) / 1e6
        skipped = f", {len(info['skipped'])} skipped" if info["skipped"] else ""
        stray = sum(info["stray_label_pixels"].values())
        stray = (f", {stray} label pixels of values outside the dataset ignored "
                 f"({', '.join(info['stray_label_pixels'])})") if stray else ""
        click.echo(f"  {split}: {info['num_snippets']} clips, {info['labelled_frames']} labelled frames, in "
                   f"{len(info['shards'])} shards ({megabytes:.1f} MB){skipped}{stray}")


def _int_pair(text: str) -> tuple[int, int]:
    """Parses ``3,5`` into ``(3, 5)``."""
    parts = text.split(",")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise click.BadParameter(f"expected MIN,MAX such as 3,5, got {text!r}")
    return int(parts[0]), int(parts[1])


def parse_contexts(text: str) -> list[int]:
    """Parses ``0,1,2,4`` into a list of non-negative ints."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise click.BadParameter(f"expected comma-separated non-negative integers such as 0,1,2,4,8,11, got {text!r}")
    return values


@main.command()
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--model", "model_name", required=True, help="Zoo name, e.g. resnet-cgru-small-deep (`vseg models`).")
@click.option("--epochs", default=TRAIN_DEFAULTS["epochs"], show_default=True, type=click.IntRange(min=1),
              help="Total epochs.")
@click.option("--batch-size", default=TRAIN_DEFAULTS["batch_size"], show_default=True, type=click.IntRange(min=1),
              help="Global batch, split across replicas.")
@click.option("--seq-len", default=TRAIN_DEFAULTS["seq_len"], show_default=True, type=click.IntRange(min=1),
              help="Frames per training window (forced to 1 for temporal=none).")
@size_option("--crop", "Random crop size (default: full frames).")
@click.option("--lr", default=TRAIN_DEFAULTS["lr"], show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Adam learning rate (beta1 0.9, beta2 0.999, eps 1e-8, no weight decay).")
@click.option("--grad-accum", default=TRAIN_DEFAULTS["grad_accum"], show_default=True, type=click.IntRange(min=1),
              help="Gradient accumulation steps.")
@click.option("--steps-per-epoch", default=None, type=click.IntRange(min=1),
              help="Training batches per epoch (default: one pass over the train snippets).")
@click.option("--val-steps", default=None, type=click.IntRange(min=1),
              help="Validation batches per epoch (default: the whole val split).")
@click.option("--val-context", default=None, type=click.IntRange(min=0),
              help="Context frames before the labelled frame in validation (default: seq-len - 1).")
@click.option("--void-as-class/--ignore-void", default=TRAIN_DEFAULTS["void_as_class"], show_default=True,
              help="Train void as Cityscapes' class 19 (the report) or ignore it (the evaluator).")
@click.option("--mixed-precision/--no-mixed-precision", default=TRAIN_DEFAULTS["mixed_precision"], show_default=True,
              help="mixed_float16 on GPU, mixed_bfloat16 on CPU.")
@click.option("--jit/--no-jit", default=TRAIN_DEFAULTS["jit"], show_default=True,
              help="XLA-compile the train step (much slower on CPU; on JAX always on; see docs/BENCHMARKS.md).")
@click.option("--remat/--no-remat", default=TRAIN_DEFAULTS["remat"], show_default=True,
              help="Recompute stage and cell activations in the backward pass: "
                   "about 0.4x the memory for 1.3x the time on TensorFlow (same results; any backend).")
@click.option("--max-frame-skip", default=TRAIN_DEFAULTS["max_frame_skip"], show_default=True,
              type=click.IntRange(min=1),
              help="Random temporal stride 1..K (temporal augmentation).")
@click.option("--flip/--no-flip", default=TRAIN_DEFAULTS["flip"], show_default=True, help="Random horizontal flips.")
@click.option("--full-windows/--causal-windows", default=TRAIN_DEFAULTS["full_windows"], show_default=True,
              help="The report's full windows (decoder on every frame) instead of causal windows that end "
                   "at the labelled frame (decoder there only; same gradients, BatchNorm statistics aside).")
@click.option("--temporal-loss", default=TRAIN_DEFAULTS["temporal_loss"], show_default=True,
              type=click.FloatRange(min=0),
              help="Weight of the temporal loss (the report's temporal regularisation, after ETC): the frame "
                   "before the labelled one learns its labels, warped by DIS optical flow; 1 weighs it as much as "
                   "the labelled frame. Not a flicker cure: see docs/TEMPORAL_LOSS.md. 0 = off.")
@click.option("--temporal-loss-target", default=TRAIN_DEFAULTS["temporal_loss_target"], show_default=True,
              type=click.Choice(defaults.TEMPORAL_LOSS_TARGETS),
              help="What the frame before learns: the labelled frame's labels (labels) or prediction (labelled); "
                   "or the labelled frame learns the frame before's prediction (previous, ETC's), or both "
                   "predictions learn from each other (neither).")
@click.option("--temporal-loss-distance", default=TRAIN_DEFAULTS["temporal_loss_distance"], show_default=True,
              type=click.Choice(defaults.TEMPORAL_LOSS_DISTANCES),
              help="Per pixel: the KL divergence from the target's class distribution (kl) or ETC's squared "
                   "distance of the probabilities (squared).")
@click.option("--temporal-loss-normalization", default=TRAIN_DEFAULTS["temporal_loss_normalization"],
              show_default=True, type=click.Choice(defaults.TEMPORAL_LOSS_NORMALIZATIONS),
              help="Mean over the occlusion weight (weight) or over every pixel (pixels, ETC's).")
@click.option("--temporal-loss-occlusion", default=TRAIN_DEFAULTS["temporal_loss_occlusion"], show_default=True,
              type=click.Choice(defaults.OCCLUSION_METHODS),
              help="Pixels the loss trusts: where forward and backward flow agree (forward-backward), or ETC's "
                   "colour match (photometric, which also drops pixels whose look changes).")
@click.option("--temporal-loss-warmup", default=TRAIN_DEFAULTS["temporal_loss_warmup"], show_default=True,
              type=click.IntRange(min=0), help="Epochs of cross-entropy alone before the temporal loss starts.")
@click.option("--supervise", default=TRAIN_DEFAULTS["supervise"], type=click.Choice(defaults.SUPERVISION),
              help="The loss on the labelled frame each window ends at (last) or on every labelled frame of the "
                   "window (all). [default: all for data labelled on several frames per clip, else last]")
@click.option("--seed", default=TRAIN_DEFAULTS["seed"], show_default=True, type=int,
              help="Seeds weights and data order.")
@click.option("--backup-every", default="auto", show_default=True, callback=_backup_every, metavar="auto|N",
              help="Back up weights, optimizer and data position every N steps within an epoch (0: at epoch ends "
                   "only); auto keeps backups under 2% of the training time. Epoch ends always back up.")
@click.option("--deterministic/--no-deterministic", default=TRAIN_DEFAULTS["deterministic"], show_default=True,
              help="Deterministic kernels: a run killed and resumed any number of times ends with the weights of "
                   "an uninterrupted one.")
@click.option("--cpu-kernels", default=TRAIN_DEFAULTS["cpu_kernels"], show_default=True,
              type=click.Choice(CPU_KERNELS),
              help="TensorFlow's CPU kernels: auto picks the faster for the model on this CPU (Eigen for the "
                   "vanilla and ResNet Original-size models on x86 CPUs without AVX-512, else oneDNN); "
                   "TF_ENABLE_ONEDNN_OPTS, if set, wins over auto.")
@click.option("--logical-cpus", default=TRAIN_DEFAULTS["logical_cpus"], show_default=True, type=click.IntRange(min=0),
              help="Split the CPU into this many devices and train data-parallel across them (to test "
                   "multi-replica training without GPUs; TensorFlow or JAX).")
@cpu_kernels_chosen("train")
@user_errors
def train(data_dir, run_dir, model_name, crop, **options):
    """Train a model on converted shards; re-run the same command to resume.

    DATA_DIR is the output of `vseg convert` (its manifest gives the classes); RUN_DIR receives
    config.json, last.keras, best.keras, history.csv, TensorBoard logs and the resume state.
    SIGTERM or Ctrl-C stops after the current step with a backup and exit code 75; run the same
    command again to resume there.
    """
    from vseg_keras.train import train as train_model

    train_model(data_dir, run_dir, TrainConfig(model=model_name, crop=crop, **options), log=click.echo)


@main.command()
@model_argument
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--split", default=defaults.EVAL_SPLIT, show_default=True, help="Split to evaluate.")
@click.option("--context", default=defaults.EVAL_CONTEXT, show_default=True, type=click.IntRange(min=0),
              help="Cityscapes-style data: frames before the labelled one (11: the report's 12-frame windows); "
                   "videos (vspw, folders) stream from their first frame.")
@click.option("--context-sweep", default=None, metavar="K1,K2,...",
              help="Evaluate each context, write context_sweep.json and .png (e.g. 0,1,2,4,8,11,19).")
@click.option("--batch-size", default=defaults.EVAL_BATCH_SIZE, show_default=True, type=click.IntRange(min=1))
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Folder for report.json and plots (default: RUN_DIR/eval, or <model>-eval/ beside a .keras file).")
@click.option("--report", "report_path", default=None, type=click.Path(dir_okay=False),
              help="Also write the report JSON here.")
@click.option("--save-predictions", default=None, type=click.Path(file_okay=False),
              help="Write labelled-frame predictions here: Cityscapes result files (labelIds), or for videos "
                   "<clip>/<frame>.png in train ids (VSPW's submission layout).")
@size_option("--prediction-size", "Size of saved predictions (default: the original ground truth's size, if known).")
@click.option("--max-sequences", default=None, type=click.IntRange(min=1), help="Evaluate only the first N.")
@click.option("--temporal-consistency/--no-temporal-consistency", default=True, show_default=True,
              help="Also measure TC (predicts every frame); without it only the labelled frame is decoded.")
@click.option("--flow", default=None, metavar="METHOD",
              help="Optical flow of the TC: dis (OpenCV's DIS, the default) or farneback.")
@threads_option
@cpu_kernels_chosen("infer")
@user_errors
def evaluate(model_path, data_dir, split, context, context_sweep, batch_size, out_dir, report_path,
             save_predictions, prediction_size, max_sequences, temporal_consistency, flow, threads):
    """The dataset's metrics (its official mIoU convention), temporal consistency and, for videos, mVC.

    MODEL is a run directory (best.keras, else last.keras) or a .keras file; or a .tflite/.onnx file
    or SavedModel from `vseg export`, run frame by frame. Cityscapes-style data is scored in windows
    ending at each labelled frame; videos (vspw, folders) stream from their first frame with every
    labelled frame scored.
    """
    from vseg_keras import evaluate as evaluation
    from vseg_keras.flow import check_flow_method

    flow = check_flow_method(flow or defaults.FLOW)  # before loading the model
    contexts = parse_contexts(context_sweep) if context_sweep else None
    model = evaluation.open_model_to_evaluate(model_path, threads=threads)
    out_dir = out_dir or evaluation.default_output_dir(model_path)
    result = evaluation.evaluate_to_files(
        model, data_dir, out_dir, contexts=contexts, report_path=report_path, split=split, context=context,
        batch_size=batch_size, max_sequences=max_sequences, save_predictions=save_predictions,
        prediction_size=prediction_size,
        with_temporal_consistency=temporal_consistency, flow=flow,
    )
    if contexts:
        for k, miou, tc in zip(result["contexts"], result["miou"], result["temporal_consistency"], strict=True):
            click.echo(f"context {k:>3}: mIoU {100 * (miou or 0):6.2f}  TC {100 * (tc or 0):6.2f}")
        click.echo(f"wrote {out_dir}/context_sweep.json and context_sweep.png")
    else:
        click.echo(evaluation.format_report(result))
        click.echo(f"wrote {out_dir}/report.json and confusion_matrix.png"
                   + (f"; predictions in {save_predictions}" if save_predictions else ""))


@main.command()
@model_argument
@click.option("--format", "export_format", default=defaults.EXPORT_FORMATS[0], show_default=True,
              type=click.Choice(defaults.EXPORT_FORMATS),
              help="savedmodel: TF Serving. litert (.tflite) or onnx: the streaming step for edge runtimes.")
@click.option("--out", default=None, type=click.Path(),
              help=f"savedmodel: the model base path (default: {defaults.EXPORT_ROOT}/<model name>). litert/onnx: "
                   f"the file (default: {defaults.EXPORT_ROOT}/edge/<model>-<H>x<W>-<quantization>.tflite|.onnx).")
@click.option("--version", "version", default=None, type=click.IntRange(min=1),
              help="savedmodel: version folder to write (default: one more than the highest present).")
@size_option("--size", "litert/onnx: frame size fixed in the file (default: the run's data frame size).")
@click.option("--quantize", "quantization", default=defaults.EDGE_QUANTIZATIONS[0], show_default=True,
              type=click.Choice(defaults.EDGE_QUANTIZATIONS),
              help="litert: float16 stores the weights as float16; int8 is full-integer (needs --calibration).")
@click.option("--calibration", "calibration_dir", default=None, type=click.Path(file_okay=False),
              help="int8: converted data (vseg convert) to calibrate on.")
@click.option("--calibration-split", default=defaults.CALIBRATION_SPLIT, show_default=True,
              help="int8: its split to calibrate on.")
@click.option("--calibration-windows", default=defaults.CALIBRATION_WINDOWS, show_default=True,
              type=click.IntRange(min=1), help=f"int8: windows of {defaults.CALIBRATION_CONTEXT + 1} frames to read.")
@click.option("--logits", is_flag=True, help="litert/onnx: also output the float32 logits.")
@cpu_kernels_chosen("infer")
@user_errors
def export(model_path, export_format, out, version, size, quantization, calibration_dir, calibration_split,
           calibration_windows, logits):
    """Export a trained model for TF Serving (SavedModel) or edge runtimes (LiteRT, ONNX).

    MODEL is a run directory (best.keras, else last.keras) or a .keras file. A SavedModel takes uint8
    frames of any size and has streaming signatures for temporal models; a .tflite or .onnx file is the
    streaming step (one uint8 frame and the states in; labels and the next states out) at a fixed size.
    """
    from vseg_keras.export import check_export_backend
    from vseg_keras.loading import load_trained_model

    edge_only = {"--size": size, "--calibration": calibration_dir, "--logits": logits,
                 "--quantize": quantization != defaults.EDGE_QUANTIZATIONS[0]}
    if export_format == "savedmodel" and any(edge_only.values()):
        raise click.UsageError(f"{', '.join(k for k, v in edge_only.items() if v)}: for --format litert or onnx")
    if export_format != "savedmodel" and version is not None:
        raise click.UsageError("--version: for --format savedmodel (an edge export is one file: give --out)")
    check_export_backend()  # before loading the model: the refusal is immediate
    if export_format == "savedmodel":
        if out and os.path.isfile(out):
            raise click.BadParameter(f"{out!r} is a file (a SavedModel base path is a folder)", param_hint="'--out'")
        _export_saved_model(load_trained_model(model_path), out, version)
        return
    from vseg_keras import edge

    edge.check_edge_options(export_format, quantization, calibration_dir, calibration_split, out)
    size = edge.edge_export_size(model_path, size)
    path = edge.export_edge_model(load_trained_model(model_path), export_format, size, path=out,
                                  quantization=quantization, calibration_dir=calibration_dir,
                                  calibration_split=calibration_split, calibration_windows_count=calibration_windows,
                                  logits=logits)
    click.echo(f"exported the streaming step ({export_format}, {quantization}, {size[0]}x{size[1]}) to {path}; "
               f"run it with: vseg predict {path} INPUT OUTPUT.mp4")


def _export_saved_model(model, out_dir: str | None, version: int | None) -> None:
    from vseg_keras.export import export_saved_model

    path = export_saved_model(model, out_dir=out_dir, version=version)
    base = os.path.dirname(path)
    base = os.path.abspath(base) if "://" not in base else base
    click.echo(f"exported to {path}; serve with: tensorflow_model_server --model_base_path={base}")


@main.command()
@model_argument
@click.argument("source", metavar="INPUT", type=click.Path())
@click.argument("output", metavar="OUTPUT", type=click.Path(dir_okay=False))
@click.option("--labels-dir", default=None, type=click.Path(file_okay=False),
              help="Also write per-frame label PNGs and colour PNGs here.")
@click.option("--label-ids", is_flag=True,
              help="Write the dataset's own label values (Cityscapes labelIds, your dataset.json ids) instead of "
                   "train ids.")
@size_option("--size", "Run the model at this size (default: the frame size; a .tflite/.onnx file's own size).")
@click.option("--side-by-side", is_flag=True, help="Show the input frame and the overlay next to each other.")
@click.option("--scale", default=1, show_default=True, type=click.IntRange(1, 16),
              help="Draw the video this many times larger than the input (a small video's legend becomes readable).")
@click.option("--report", "report_path", default=None, type=click.Path(dir_okay=False),
              help="Measure flicker without labels and write it here (JSON): ETC's temporal consistency of "
                   "consecutive predictions with DIS flow, under vseg evaluate's keys.")
@threads_option
@progress_option("Progress bar with frames/s, and a total and ETA when the video announces its length.")
@cpu_kernels_chosen("infer")
@user_errors
def predict(model_path, source, output, labels_dir, label_ids, size, side_by_side, scale, report_path, threads,
            progress):
    """Segment a video (file, folder of frames or Cityscapes sequence folder) into an overlay mp4.

    MODEL is a .keras file, a run directory, a SavedModel from `vseg export`, or a .tflite/.onnx file
    from `vseg export --format litert|onnx`. Temporal models stream with carried state: memory does not
    grow with the video length. With --report, flicker is measured on any video, no labels needed.
    """
    from vseg_keras.predict import predict_video

    result = predict_video(model_path, source, output, labels_dir=labels_dir, label_ids=label_ids,
                           size=size, progress=progress, threads=threads, side_by_side=side_by_side, scale=scale,
                           report=report_path)
    click.echo(f"segmented {result['frames']} frames ({result['clips']} clip(s)) -> {result['output']}"
               + (f"; labels in {labels_dir}" if labels_dir else ""))
    if result["flicker"]:
        click.echo(_flicker_line(result["flicker"], report_path))


def _flicker_line(flicker: dict, report_path: str) -> str:
    """One line: the video's temporal consistency (or why there is none) and where the report went."""
    consistency = flicker["temporal_consistency"]
    measured = (f"temporal consistency {100 * consistency:.2f} over {flicker['temporal_consistency_pairs']} frame "
                f"pairs ({flicker['temporal_consistency_flow']} flow)" if consistency is not None
                else "temporal consistency: none (no two consecutive frames)")
    return f"{measured} -> {report_path}"


@main.command()
@click.option("--out", "out_dir", default=defaults.DEMO_DIR, show_default=True, type=click.Path(file_okay=False),
              help="Folder for everything the demo makes.")
@click.option("--quick", is_flag=True, help="Tiny sizes: a smoke run of every step (for CI).")
@user_errors
def demo(out_dir, quick):
    """Run the main job on built-in synthetic data (about 7 minutes on 2 CPU cores).

    Synthesise and convert a video task that needs memory, train a temporal model and its frame-wise
    twin, evaluate both, export the temporal one as a SavedModel, segment a held-out video side by side,
    and draw both models on the same frames (comparison.png)."""
    from vseg_keras.demo import ROLE_NAMES, format_comparison, run_demo

    report = run_demo(out_dir, quick=quick, log=click.echo)
    click.echo("")
    click.echo(format_comparison(report))
    verdict = "comes out ahead" if report["temporal_ahead"] else "does NOT come out ahead"
    click.echo(f"\nthe temporal model {verdict} (mIoU and temporal consistency)" + (" [quick mode]" if quick else ""))
    artefacts = dict(report["artefacts"])
    artefacts.update({f"run ({ROLE_NAMES[role]})": path for role, path in artefacts.pop("runs").items()})
    for name, path in artefacts.items():
        click.echo(f"{name:>16}: {path}")
    click.echo(f"{'report':>16}: {os.path.join(out_dir, 'report.json')}")


if __name__ == "__main__":
    main()
