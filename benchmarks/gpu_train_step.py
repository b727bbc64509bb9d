"""The train step per frame on a GPU with JAX and PyTorch but no TensorFlow: vseg on JAX, the PyTorch reference.

The device machines lent to some of this project's tasks have JAX and PyTorch with CUDA and no TensorFlow
(its wheel is too large to carry there), so ``train_step.py`` and ``torch_reference.py``, which need
TensorFlow, cannot run there. vseg's model, loss, metric and optimizer need none: a ``vseg`` case builds
``--model`` from the registry, wraps it as ``vseg train`` does on causal windows
(``TrainingModel(model, "last_frame")``: the decoder and head on the last frame only) and compiles it with
:func:`vseg_keras.train.compile_for_training` on the JAX backend (Keras' jit-compiled train step: XLA with
cuDNN's convolutions). A ``torch`` case is ``torch_reference.py``'s PyTorch ``vanilla-cgru`` (the same
layers and weight count, computing the same) on CUDA, channels-last, ``torch.compile``d, with the fused Adam
and ``torch.backends.cudnn.benchmark`` on.

Each case runs in a fresh process, the cases in turn, ``--rounds`` times; per window length ``T`` the median
step, and per frame computed the mean step over the ``T`` of ``--lengths`` divided by their mean frame count
(as ``torch_reference.py``). Every step ends in a value copied to the host (Keras' logs, PyTorch's
``loss.item()``), so the timings wait for the GPU.

Cases: ``vseg:float32``, ``vseg:bfloat16`` (Keras' ``mixed_bfloat16`` policy; ``vseg train
--mixed-precision`` picks ``mixed_float16`` on a GPU, at the same tensor-core rate on Hopper),
``torch:compile``, ``torch:compile-bf16`` (``torch.autocast`` to bfloat16). In float32 both sides let
cuDNN use TF32 (XLA's and PyTorch's defaults for convolutions on a GPU).

Usage (on the device machine, with Keras carried as wheels: docs/BENCHMARKS.md)::

    python3 benchmarks/gpu_train_step.py --size 256x512 --lengths 3 --repeats 10 \\
        --case vseg:float32 --case torch:compile --case vseg:bfloat16 --case torch:compile-bf16 --out gpu.json
    python3 benchmarks/gpu_train_step.py --model vanilla-crnn-small-shallow --size 512x1024 \\
        --case vseg:float32 --case vseg:bfloat16 --repeats 3 --out epoch.json     # T = 1..5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from torch_reference import SIZES, build_torch_model, run_child, time_by_length, torch_train_step, with_time_per_frame

CASES = ("vseg:float32", "vseg:bfloat16", "torch:compile", "torch:compile-bf16")


def random_window(batch: int, steps: int, height: int, width: int):
    """uint8 frames ``[batch, steps, height, width, 3]`` and the last frame's labels ``[batch, height, width]``."""
    import numpy as np

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (batch, steps, height, width, 3), np.uint8)
    return frames, rng.integers(0, 20, (batch, height, width), np.uint8)


def run_vseg_case(case: dict, lengths: list[int], batch: int, repeats: int, warmup: int) -> dict:
    """One vseg case in this process (Keras on JAX)."""
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import keras

    from vseg_keras.models.registry import build_model
    from vseg_keras.models.training_model import TrainingModel
    from vseg_keras.train import TrainConfig, compile_for_training

    if case["variant"] == "bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = TrainingModel(build_model(case["model"], seed=0), "last_frame")
    compile_for_training(model, TrainConfig(model=case["model"]))
    frames, labels = random_window(batch, max(lengths), case["height"], case["width"])
    runs = {t: (lambda t=t: model.train_on_batch(frames[:, :t], labels)) for t in lengths}
    return {**case, "jax": jax.__version__, "keras": keras.__version__, "device": str(jax.devices()[0]),
            "jit_compile": bool(model.jit_compile), **time_by_length(runs, repeats, warmup)}


def run_torch_case(case: dict, lengths: list[int], batch: int, repeats: int, warmup: int) -> dict:
    """One PyTorch case in this process, on ``case["device"]`` (CUDA unless checking the script on a CPU)."""
    import torch

    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    device = case["device"]
    model = build_torch_model(SIZES[case["model"].split("-", 2)[2]]).to(device)
    model.train()
    step = torch_train_step(model, case["variant"], 20, device=device)
    frames, labels = (torch.from_numpy(a).to(device) for a in random_window(batch, max(lengths), case["height"],
                                                                             case["width"]))
    runs = {t: (lambda t=t: step(frames[:, :t], labels)) for t in lengths}
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return {**case, "torch": torch.__version__, "device": name, **time_by_length(runs, repeats, warmup)}


def measure(case_text: str, args: argparse.Namespace) -> dict:
    """One case in a fresh process; adds ``window_s`` and ``frame_ms``."""
    framework, _, variant = case_text.partition(":")
    case = {"case": case_text, "framework": framework, "variant": variant, "model": args.model,
            "height": args.height, "width": args.width, "device": args.torch_device}
    command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(case), "--lengths", args.lengths,
               "--batch", str(args.batch), "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
    started = time.perf_counter()
    result = {**case, **run_child(command, args.timeout, {**os.environ, "KERAS_BACKEND": "jax"})}
    result["process_s"] = round(time.perf_counter() - started, 1)
    return with_time_per_frame(result, args.batch)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", choices=CASES, help="repeatable (default: all four)")
    parser.add_argument("--model", default="vanilla-cgru-small-shallow",
                        help="a zoo name; with a torch case a vanilla-cgru one (the reference's architecture)")
    parser.add_argument("--size", default="256x512", help="HxW")
    parser.add_argument("--lengths", default="1,2,3,4,5", help="window lengths T, comma-separated")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--torch-device", default="cuda", choices=("cuda", "cpu"),
                        help="where the torch cases run (cpu: to check this script on a machine without a GPU)")
    parser.add_argument("--out", default=None, help="the JSON report, rewritten after every case")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    lengths = [int(t) for t in args.lengths.split(",")]
    if args.child:
        case = json.loads(args.child)
        run = run_vseg_case if case["framework"] == "vseg" else run_torch_case
        print(json.dumps(run(case, lengths, args.batch, args.repeats, args.warmup)), flush=True)
        return {}
    cases = args.case or CASES
    torch_size = args.model.split("-", 2)[2] if args.model.startswith("vanilla-cgru-") else None
    if any(case.startswith("torch:") for case in cases) and torch_size not in SIZES:
        raise SystemExit(f"--model {args.model!r}: the torch cases need vanilla-cgru-{{{', '.join(SIZES)}}}")
    args.height, args.width = (int(n) for n in args.size.split("x"))
    report = {"benchmark": "gpu_train_step", "command": " ".join(sys.argv), "results": []}
    for _ in range(args.rounds):
        for case_text in cases:
            result = measure(case_text, args)
            print(json.dumps(result), flush=True)
            report["results"].append(result)
            if args.out:
                with open(f"{args.out}.tmp", "w", encoding="utf-8") as handle:
                    json.dump(report, handle, indent=2)
                os.replace(f"{args.out}.tmp", args.out)
    return report


if __name__ == "__main__":
    main()
