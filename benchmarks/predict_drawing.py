"""What ``vseg predict`` adds per frame besides the model: drawing the overlay and, with ``--report``, the
flicker measurement (DIS flow and the warped comparison of one frame pair).

    python benchmarks/predict_drawing.py --height 1080 --width 1920

Medians of ``--repeats`` timed calls after one warm-up, on random labels and a real frame pair
(``tests/data/vtest_clip.mp4`` resized to the size asked), in one process.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.machine import median, time_calls  # noqa: E402
from vseg_keras.datasets.cityscapes import CITYSCAPES  # noqa: E402
from vseg_keras.metrics import consistency_confusion  # noqa: E402
from vseg_keras.predict import read_frames  # noqa: E402
from vseg_keras.render import overlay, video_frame  # noqa: E402

CLIP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data", "vtest_clip.mp4")


def median_ms(call, repeats: int) -> float:
    return 1000 * median(time_calls(call, repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    size = (args.width, args.height)
    frames = np.stack([cv2.resize(frame.image, size) for frame in itertools.islice(read_frames(CLIP), 2)])
    labels = np.random.default_rng(0).integers(0, CITYSCAPES.num_classes, (2, args.height, args.width), np.uint8)
    result = {
        "size": [args.height, args.width],
        "overlay_ms": median_ms(lambda: overlay(frames[0], labels[0], CITYSCAPES), args.repeats),
        "side_by_side_ms": median_ms(lambda: video_frame(frames[0], labels[0], CITYSCAPES, True), args.repeats),
        "flicker_pair_ms": median_ms(lambda: consistency_confusion(labels, frames, CITYSCAPES.num_classes),
                                     args.repeats),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
