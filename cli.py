"""The ``vseg`` command line: a thin click shell over :mod:`vseg_keras`.

Every command parses its arguments and calls one library function; errors
the user can fix are printed as one line with a non-zero exit.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import fnmatch  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402

import click  # noqa: E402


def parse_size(text: str) -> tuple[int, int]:
    """Parses ``HxW`` (e.g. ``512x1024``) into ``(height, width)``."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"expected HEIGHTxWIDTH such as 512x1024, got {text!r}")
    return int(parts[0]), int(parts[1])


def user_errors(command):
    """Turns the library's ValueError/OSError into one ``Error: ...`` line and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ValueError, OSError) as error:
            raise click.ClickException(str(error).strip().splitlines()[0]) from None

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
@click.option("--flops-size", default="512x1024", show_default=True, metavar="HxW",
              help="Frame size for the GFLOPs column.")
@click.option("--num-classes", default=20, show_default=True, type=click.IntRange(min=1))
@user_errors
def models(patterns, output_format, flops, flops_size, num_classes):
    """List the model zoo: name, trainable parameters, GFLOPs per frame.

    PATTERNS are optional names or shell-style patterns, e.g. 'resnet-*-small-deep'.
    """
    from vseg_keras import list_models
    from vseg_keras.model_info import describe_models, format_model_table

    height, width = parse_size(flops_size)
    names = list_models()
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if not names:
            raise click.ClickException(
                f"no model matches {' '.join(patterns)}; `vseg models` lists them all"
            )
    rows = describe_models(names, num_classes=num_classes, flops=flops, height=height, width=width)
    if output_format == "json":
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(format_model_table(rows))


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--train-sequences", default=12, show_default=True, type=click.IntRange(min=0),
              help="Snippets (30 frames each) in the train split.")
@click.option("--val-sequences", default=4, show_default=True, type=click.IntRange(min=0),
              help="Snippets in the val split.")
@click.option("--test-sequences", default=0, show_default=True, type=click.IntRange(min=0),
              help="Snippets in the test split (dummy all-0 labels, as in Cityscapes).")
@click.option("--height", default=128, show_default=True, type=click.IntRange(min=32),
              help="Frame height in pixels.")
@click.option("--width", default=256, show_default=True, type=click.IntRange(min=64),
              help="Frame width in pixels.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Random seed; the same seed gives byte-identical files.")
@click.option("--overwrite", is_flag=True, help="Replace a synthetic dataset already in OUT_DIR.")
@user_errors
def synth(out_dir, train_sequences, val_sequences, test_sequences, height, width, seed, overwrite):
    """Write a synthetic video dataset in Cityscapes layout.

    Moving cars, persons and bicycles look alike ("cloaked") from 1-3 frames before the labelled
    frame on, so labelling them needs memory of earlier frames. Convert it with
    `vseg convert OUT_DIR DATA_DIR --keep-size`.
    """
    import time

    from data_tools.synth import make_synthetic_cityscapes

    started = time.perf_counter()
    summary = make_synthetic_cityscapes(
        out_dir, train_sequences=train_sequences, val_sequences=val_sequences, test_sequences=test_sequences,
        height=height, width=width, seed=seed, overwrite=overwrite,
    )
    counts = ", ".join(f"{split} {info['snippets']}" for split, info in summary["splits"].items())
    click.echo(f"Wrote synthetic Cityscapes ({height}x{width}, seed {seed}) to {summary['root']}: "
               f"{counts} snippets of 30 frames in {time.perf_counter() - started:.1f} s")


@main.command()
@click.argument("cityscapes_root", type=click.Path(file_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--splits", default="train,val", show_default=True, metavar="LIST",
              help="Comma-separated splits to convert (test is stored without labels).")
@click.option("--height", default=512, show_default=True, type=click.IntRange(min=1),
              help="Stored frame height (frames: area interpolation, labels: nearest neighbour).")
@click.option("--width", default=1024, show_default=True, type=click.IntRange(min=1),
              help="Stored frame width.")
@click.option("--keep-size", is_flag=True,
              help="Store frames and labels at their original size (frame PNGs copied as they are).")
@click.option("--frames-before", default=19, show_default=True, type=click.IntRange(min=0),
              help="Frames stored before the labelled frame.")
@click.option("--frames-after", default=10, show_default=True, type=click.IntRange(min=0),
              help="Frames stored after the labelled frame.")
@click.option("--shards", default=None, type=click.IntRange(min=1),
              help="Shards per split (at most one per snippet). [default: about 256 MB each]")
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="Worker processes for PNG decoding/resizing/encoding. [default: all cores]")
@click.option("--overwrite", is_flag=True, help="Delete an earlier conversion in OUT_DIR and start over.")
@click.option("--skip-bad", is_flag=True,
              help="Skip snippets with a missing or corrupt file and list them in the manifest.")
@click.option("--compress", is_flag=True, help="GZIP-compress the shards (.tfrecord.gz).")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bar (shown on a terminal only).")
@user_errors
def convert(cityscapes_root, out_dir, splits, height, width, keep_size, frames_before, frames_after, shards,
            workers, overwrite, skip_bad, compress, progress):
    """Convert Cityscapes video snippets to TFRecord shards.

    CITYSCAPES_ROOT holds leftImg8bit_sequence/ and gtFine/; each labelled frame gives one snippet.
    OUT_DIR receives the shards and manifest.json.
    An interrupted run resumes when re-run with the same settings.
    """
    import time

    from data_tools.convert import convert_cityscapes

    started = time.perf_counter()
    split_names = [name.strip() for name in splits.split(",") if name.strip()]
    manifest = convert_cityscapes(
        cityscapes_root, out_dir, splits=split_names, height=height, width=width, keep_size=keep_size,
        frames_before=frames_before, frames_after=frames_after, shards=shards, workers=workers,
        overwrite=overwrite, skip_bad=skip_bad, compress=compress, progress=progress,
    )
    size = "original size" if keep_size else f"{height}x{width}"
    seconds = time.perf_counter() - started
    click.echo(f"Converted to {os.path.abspath(out_dir)} ({size}, "
               f"{frames_before + frames_after + 1} frames per snippet) in {seconds:.1f} s:")
    for split, info in manifest["splits"].items():
        megabytes = sum(shard["bytes"] for shard in info["shards"]) / 1e6
        skipped = f", {len(info['skipped'])} skipped" if info["skipped"] else ""
        click.echo(f"  {split}: {info['num_snippets']} snippets in {len(info['shards'])} shards "
                   f"({megabytes:.1f} MB){skipped}")


if __name__ == "__main__":
    main()
