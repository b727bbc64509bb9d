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


if __name__ == "__main__":
    main()
