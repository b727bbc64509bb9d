"""Per-frame training speed: vseg against our own PyTorch reference of the same network, interleaved (by hand).

The reference is written here from the report and vseg's model definition (not converted from vseg):
``vanilla-cgru-{size}`` in PyTorch, channels-last, the same layers, weight count and computation as vseg's
training step on causal windows:

* frames ``[B, T, H, W, 3]`` uint8, normalised inside the model (ImageNet mean and std);
* the encoder (vanilla blocks: [3x3 conv with bias -> BatchNorm (eps 1e-3, momentum 0.99) -> ReLU] x 2;
  2x2 stride-2 convolutions between levels) on all ``T`` frames;
* a cGRU per level over the ``T`` frames from zero states (one 3x3 convolution for both gates on
  ``concat(x, h)``, one for the candidate on ``concat(x, r * h)``), its last output only; as in vseg, the
  first step convolves ``x`` alone with the kernels' ``x`` rows (the zero state's convolutions are zero);
* the decoder (2x2 stride-2 transposed convolution, concatenation with the level's cell output, a vanilla
  block) and the 3x3 head on the last frame only;
* cross-entropy over the pixels not labelled 255, Adam (eps 1e-8), and a streaming confusion matrix of
  the predictions (vseg's mIoU metric).

Each case runs in a fresh process; rounds alternate the cases, so every ratio compares runs minutes
apart on the same machine. A window's length ``T`` is uniform over 1..``--seq-len`` (the report's
temporal augmentation, as ``vseg train`` draws its causal windows); every repeat times one step of
each ``T``; ``step_s`` is the mean over ``T`` of the per-``T`` medians (the expected time of a window)
and ``frame_ms`` that divided by the expected frames of a window, ``mean(T)``: the time per frame
computed. vseg's cases are ``benchmarks/train_step.py``'s (Keras ``train_on_batch``, exactly what
``vseg train`` runs per batch).

PyTorch is not a vseg dependency: install it by hand in a separate environment (the PyPI wheel brings
about 5 GB of CUDA libraries, and it runs on the CPU)::

    python3.11 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy
    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/torch_reference.py --torch-python /tmp/torchenv/bin/python \\
        --size 256x512 --rounds 3 --out torch_reference.json

Cases: ``vseg:SWITCH`` (``base``, ``mixed``, ... of ``train_step.py``; ``vseg-baseline:SWITCH`` runs the
vseg_keras of ``--baseline DIR``, e.g. a worktree of an older commit) and ``torch:MODE`` with MODE
``compile`` (``torch.compile``, inductor, one graph per ``T``), ``compile-bf16`` (the same under
``torch.autocast`` bfloat16), ``eager`` or ``eager-bf16``; channels-last memory and the fused Adam in
all; ``floor:FRAMEWORK`` (``tensorflow``, ``torch``, ``tensorflow-bf16``, ``torch-bf16``) times the step's
convolutions alone (:func:`conv_shapes`), forward and backward, in float32 or bfloat16. ``--weights`` checks
first that both networks have the same number of weights.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

DEFAULT_CASES = ("vseg:base", "torch:compile", "vseg:mixed", "torch:compile-bf16")
TORCH_MODES = ("compile", "compile-bf16", "eager", "eager-bf16")
FLOORS = ("tensorflow", "torch", "tensorflow-bf16", "torch-bf16")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZES = {"small-shallow": (16, 32, 64), "small-deep": (16, 32, 64, 128), "original": (64, 128, 256)}


def build_torch_model(filters: tuple[int, ...], num_classes: int = 20):
    """The PyTorch reference: ``[B, T, H, W, 3]`` uint8 frames -> the last frame's logits ``[B, C, H, W]``."""
    import torch
    from torch import nn

    def conv_bn_relu(channels_in: int, channels_out: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, padding=1),
                             nn.BatchNorm2d(channels_out, eps=1e-3, momentum=0.01), nn.ReLU(inplace=True))

    def block(channels_in: int, channels_out: int) -> nn.Module:
        return nn.Sequential(conv_bn_relu(channels_in, channels_out), conv_bn_relu(channels_out, channels_out))

    class ConvGRUCell(nn.Module):
        def __init__(self, channels: int):
            super().__init__()
            self.gates = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1)
            self.candidate = nn.Conv2d(2 * channels, channels, 3, padding=1)

        def forward(self, x, hidden=None):
            if hidden is None:  # zero state: x alone, with the kernels' x rows
                channels = x.shape[1]
                gates = nn.functional.conv2d(x, self.gates.weight[:, :channels], self.gates.bias, padding=1)
                reset, update = torch.sigmoid(gates).chunk(2, 1)
                candidate = nn.functional.conv2d(x, self.candidate.weight[:, :channels], self.candidate.bias,
                                                 padding=1)
                return (1 - update) * torch.tanh(candidate)
            reset, update = torch.sigmoid(self.gates(torch.cat([x, hidden], 1))).chunk(2, 1)
            candidate = torch.tanh(self.candidate(torch.cat([x, reset * hidden], 1)))
            return (1 - update) * candidate + update * hidden

    class RecurrentUNet(nn.Module):
        def __init__(self):
            super().__init__()
            levels = range(1, len(filters))
            self.stem = block(3, filters[0])
            self.downs = nn.ModuleList(nn.Conv2d(filters[i - 1], filters[i - 1], 2, stride=2) for i in levels)
            self.encoders = nn.ModuleList(block(filters[i - 1], filters[i]) for i in levels)
            self.cells = nn.ModuleList(ConvGRUCell(f) for f in filters)
            self.ups = nn.ModuleList(nn.ConvTranspose2d(filters[i], filters[i - 1], 2, stride=2) for i in levels)
            self.decoders = nn.ModuleList(block(2 * filters[i - 1], filters[i - 1]) for i in levels)
            self.head = nn.Conv2d(filters[0], num_classes, 3, padding=1)
            self.register_buffer("mean", 255 * torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", 255 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

        def forward(self, frames):
            batch, steps = frames.shape[:2]
            x = frames.flatten(0, 1).permute(0, 3, 1, 2).float()  # channels-last strides, no copy
            x = self.stem((x - self.mean) / self.std)
            features = [x]
            for down, encoder in zip(self.downs, self.encoders, strict=True):
                x = encoder(down(x))
                features.append(x)
            lasts = []
            for level_features, cell in zip(features, self.cells, strict=True):
                sequence = level_features.unflatten(0, (batch, steps))
                hidden = None  # zero state
                for t in range(steps):
                    hidden = cell(sequence[:, t], hidden)
                lasts.append(hidden)
            x = lasts[-1]
            for level in reversed(range(len(filters) - 1)):
                x = self.decoders[level](torch.cat([self.ups[level](x), lasts[level]], 1))
            return self.head(x)

    return RecurrentUNet().to(memory_format=torch.channels_last)


def conv_shapes(filters: tuple[int, ...], height: int, width: int, steps: int, batch: int) -> list[dict]:
    """Every convolution of one causal training step of ``vanilla-cgru`` on ``[batch, steps, height, width, 3]``.

    Each entry: ``n, h, w`` (the input's batch and size), ``c_in``, ``c_out``, ``kernel``, ``stride``,
    ``transpose`` and ``input_grad`` (whether the backward pass needs the input's gradient: not for the
    frames). The encoder runs on ``batch * steps`` frames; each cell's two convolutions run ``steps`` times
    in sequence on ``batch`` frames (fused: one gate convolution on ``concat(x, h)``; the first step's on
    ``x`` alone, from the zero state); the decoder and head on ``batch`` frames.
    """
    def conv(n, level, c_in, c_out, kernel=3, stride=1, transpose=False, input_grad=True):
        return {"n": n, "h": height >> level, "w": width >> level, "c_in": c_in, "c_out": c_out, "kernel": kernel,
                "stride": stride, "transpose": transpose, "input_grad": input_grad}

    frames = batch * steps
    shapes = [conv(frames, 0, 3, filters[0], input_grad=False), conv(frames, 0, filters[0], filters[0])]
    for level in range(1, len(filters)):
        previous = filters[level - 1]
        shapes += [conv(frames, level - 1, previous, previous, kernel=2, stride=2),
                   conv(frames, level, previous, filters[level]), conv(frames, level, filters[level], filters[level])]
    for level, channels in enumerate(filters):
        shapes += [conv(batch, level, channels, 2 * channels), conv(batch, level, channels, channels)]
        shapes += [conv(batch, level, 2 * channels, 2 * channels), conv(batch, level, 2 * channels, channels)] * (
            steps - 1)
    for level in reversed(range(len(filters) - 1)):
        shapes += [conv(batch, level + 1, filters[level + 1], filters[level], kernel=2, stride=2, transpose=True),
                   conv(batch, level, 2 * filters[level], filters[level]),
                   conv(batch, level, filters[level], filters[level])]
    return shapes + [conv(batch, 0, filters[0], 20)]


def forward_flops(shapes: list[dict]) -> float:
    """Forward FLOPs of ``shapes`` (multiply-add = 2), at each convolution's output size."""
    total = 0.0
    for s in shapes:
        scale = 2 if s["transpose"] else 1 / s["stride"]
        total += 2 * s["n"] * (s["h"] * scale) * (s["w"] * scale) * s["c_in"] * s["c_out"] * s["kernel"] ** 2
    return total


def torch_weight_count(filters: tuple[int, ...]) -> int:
    """Weights of the reference, counted as Keras counts them (BatchNorm's moving statistics included)."""
    model = build_torch_model(filters)
    return sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))


def torch_train_step(model, mode: str, num_classes: int, device: str = "cpu"):
    """``step(frames, labels)``: one training step of ``model`` (loss, backward, Adam, confusion matrix) on
    ``device`` (``"cpu"`` or ``"cuda"``: ``model``, ``frames`` and ``labels`` must be there)."""
    import torch
    import torch.nn.functional as functional

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-8, fused=True)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    bf16 = mode.endswith("bf16")

    def loss_and_predictions(frames, labels):
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            logits = model(frames)
        loss = functional.cross_entropy(logits.float(), labels.long(), ignore_index=255)
        return loss, logits.argmax(1)

    if mode.startswith("compile"):
        loss_and_predictions = torch.compile(loss_and_predictions, dynamic=False)

    def step(frames, labels):
        optimizer.zero_grad(set_to_none=True)
        loss, predictions = loss_and_predictions(frames, labels)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            valid = labels != 255
            confusion.add_(torch.bincount(labels[valid].long() * num_classes + predictions[valid],
                                          minlength=num_classes * num_classes))
        return loss.item()

    return step


def run_torch_case(case: dict, seq_len: int, batch: int, repeats: int, warmup: int) -> dict:
    """Times one PyTorch case in this process (the child): per-``T`` medians, as ``train_step.py``."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    model = build_torch_model(SIZES[case["size"]])
    model.train()
    step = torch_train_step(model, case["mode"], 20)
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (batch, seq_len, case["height"], case["width"], 3), np.uint8))
    labels = torch.from_numpy(rng.integers(0, 20, (batch, case["height"], case["width"]), np.uint8))
    runs = {length: (lambda length=length: step(frames[:, :length], labels)) for length in range(1, seq_len + 1)}
    return {**case, "torch": torch.__version__, "threads": torch.get_num_threads(),
            **time_by_length(runs, repeats, warmup)}


def time_by_length(runs: dict, repeats: int, warmup: int) -> dict:
    """Times ``runs`` (``{T: function}``) in turn, ``warmup`` untimed rounds then ``repeats`` timed ones:
    ``warmup_s``, ``step_seconds_by_t`` (medians) and every ``step_seconds``."""
    started = time.perf_counter()
    for _ in range(warmup):
        for run in runs.values():
            run()
    warmup_s = time.perf_counter() - started
    seconds = {t: [] for t in runs}
    for _ in range(repeats):
        for t, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[t].append(time.perf_counter() - start)
    return {"warmup_s": round(warmup_s, 1),
            "step_seconds_by_t": {str(t): round(statistics.median(s), 4) for t, s in seconds.items()},
            "step_seconds": [round(s, 4) for values in seconds.values() for s in values]}


def tensorflow_conv_floor(shapes: list[dict], bf16: bool = False):
    """A compiled function running ``shapes``' convolutions forward and backward in TensorFlow (in bfloat16 if
    ``bf16``), and its inputs. Before 5429d19 (2026-12-05) its forward convolutions were pruned (nothing read
    their outputs), so the floor timed the backward convolutions alone."""
    import numpy as np
    import tensorflow as tf
    from machine import one_element

    rng = np.random.default_rng(0)
    dtype = tf.bfloat16 if bf16 else tf.float32
    inputs = [tf.constant(rng.normal(size=(s["n"], s["h"], s["w"], s["c_in"])), dtype) for s in shapes]
    kernels = [tf.constant(rng.normal(size=(s["kernel"], s["kernel"], *(
        (s["c_out"], s["c_in"]) if s["transpose"] else (s["c_in"], s["c_out"])))) * 0.05, dtype) for s in shapes]

    def forward(x, kernel, s):
        if s["transpose"]:
            return tf.nn.conv2d_transpose(x, kernel, [s["n"], 2 * s["h"], 2 * s["w"], s["c_out"]], 2, "VALID")
        return tf.nn.conv2d(x, kernel, s["stride"], "SAME" if s["kernel"] == 3 else "VALID")

    @tf.function
    def floor(inputs, kernels):
        with tf.GradientTape() as tape:
            tape.watch([inputs, kernels])
            outputs = [forward(x, k, s) for x, k, s in zip(inputs, kernels, shapes, strict=True)]
        wanted = [x for x, s in zip(inputs, shapes, strict=True) if s["input_grad"]] + list(kernels)
        gradients = tape.gradient(outputs, wanted, output_gradients=[tf.ones_like(y) for y in outputs])
        return tf.add_n([one_element(t) for t in outputs + gradients])  # every convolution runs (none pruned)

    return lambda: floor(inputs, kernels).numpy()


def torch_conv_floor(shapes: list[dict], bf16: bool = False):
    """A function running ``shapes``' convolutions forward and backward in PyTorch (channels-last, oneDNN; in
    bfloat16 if ``bf16``)."""
    import torch
    import torch.nn.functional as functional

    dtype = torch.bfloat16 if bf16 else torch.float32

    def tensor(*shape, grad=True):
        return torch.randn(*shape, dtype=dtype).contiguous(memory_format=torch.channels_last).requires_grad_(grad)

    inputs = [tensor(s["n"], s["c_in"], s["h"], s["w"], grad=s["input_grad"]) for s in shapes]
    kernels = [tensor(*((s["c_in"], s["c_out"]) if s["transpose"] else (s["c_out"], s["c_in"])), s["kernel"],
                      s["kernel"]) for s in shapes]

    def floor():
        outputs = [functional.conv_transpose2d(x, k, stride=2) if s["transpose"] else
                   functional.conv2d(x, k, stride=s["stride"], padding=1 if s["kernel"] == 3 else 0)
                   for x, k, s in zip(inputs, kernels, shapes, strict=True)]
        torch.autograd.backward(outputs, [torch.ones_like(y) for y in outputs])

    return floor


def run_floor_case(case: dict, seq_len: int, batch: int, repeats: int, warmup: int) -> dict:
    """Times the convolutions alone of one causal training step per ``T`` (the child): TensorFlow's or PyTorch's."""
    on_torch = case["mode"].startswith("torch")
    if on_torch:
        import torch

        torch.set_num_threads(len(os.sched_getaffinity(0)))
    make = torch_conv_floor if on_torch else tensorflow_conv_floor
    filters = SIZES[case["size"]]
    shapes = {t: conv_shapes(filters, case["height"], case["width"], t, batch) for t in range(1, seq_len + 1)}
    bf16 = case["mode"].endswith("bf16")
    timed = time_by_length({t: make(each, bf16) for t, each in shapes.items()}, repeats, warmup)
    by_t = timed["step_seconds_by_t"]
    return {**case, **timed, "gflops_per_s_by_t": {
        str(t): round(3 * forward_flops(each) / by_t[str(t)] / 1e9, 1) for t, each in shapes.items()}}


def run_child(command: list[str], timeout: float, env: dict | None = None) -> dict:
    """The last JSON line a child process prints, or ``{"error": ...}``."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(lines[-1])


def measure(case_text: str, args: argparse.Namespace) -> dict:
    """One case in a fresh process: ``vseg:SWITCH`` through ``train_step.py``, ``torch:MODE`` through this script."""
    framework, _, variant = case_text.partition(":")
    size = f"{args.height}x{args.width}"
    if framework in ("vseg", "vseg-baseline"):
        from train_step import child_environment

        case = {"model": f"vanilla-cgru-{args.model_size}", "height": args.height, "width": args.width,
                "switch": variant, "windows": "causal"}
        command = [sys.executable, os.path.join(os.path.dirname(__file__), "train_step.py"), "--child",
                   json.dumps(case), "--seq-len", str(args.seq_len), "--batch", str(args.batch),
                   "--repeats", str(args.repeats), "--warmup", str(args.warmup)]
        code_dir = args.baseline if framework == "vseg-baseline" else None
        result = run_child(command, args.timeout, child_environment(code_dir, default_allocator=True, switch=variant))
    else:
        case = {"size": args.model_size, "height": args.height, "width": args.width, "mode": variant,
                "floor": framework == "floor"}
        python = sys.executable if case["floor"] and variant.startswith("tensorflow") else args.torch_python
        command = [python, os.path.abspath(__file__), "--torch-child", json.dumps(case), "--seq-len",
                   str(args.seq_len), "--batch", str(args.batch), "--repeats", str(args.repeats),
                   "--warmup", str(args.warmup)]
        result = run_child(command, args.timeout, {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return with_time_per_frame({**result, "case": case_text, "size": size}, args.batch)


def with_time_per_frame(result: dict, batch: int) -> dict:
    """``result`` with ``window_s`` (the mean of its per-``T`` medians, ``step_seconds_by_t``) and ``frame_ms``
    (that over the mean frames of a window and the batch), when it has timings."""
    by_t = result.get("step_seconds_by_t")
    if by_t:
        step_s = sum(by_t.values()) / len(by_t)
        mean_frames = sum(int(t) for t in by_t) / len(by_t)
        result["window_s"] = round(step_s, 4)
        result["frame_ms"] = round(1000 * step_s / (mean_frames * batch), 1)
    return result


def summarise(results: list[dict], cases: list[str]) -> dict:
    """Median ``frame_ms`` per case over the rounds, and each PyTorch case's ratio to the vseg case of its precision."""
    medians = {}
    for case in cases:
        values = [r["frame_ms"] for r in results if r["case"] == case and "frame_ms" in r]
        if values:
            medians[case] = {"frame_ms": round(statistics.median(values), 1), "rounds": values}
    ratios = {}
    for case in medians:
        if case.startswith("torch:"):
            partner = "vseg:mixed" if case.endswith("bf16") else "vseg:base"
            if partner in medians:
                ratios[f"{case} / {partner}"] = round(medians[case]["frame_ms"] / medians[partner]["frame_ms"], 2)
    return {"medians": medians, "torch_over_vseg": ratios}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--torch-python", default=None, help="a Python with torch installed (see above)")
    parser.add_argument("--case", action="append", default=None, metavar="FRAMEWORK:VARIANT",
                        help=f"repeatable; default: {' '.join(DEFAULT_CASES)}")
    parser.add_argument("--model-size", default="small-shallow", choices=sorted(SIZES))
    parser.add_argument("--size", default="256x512", help="HxW of the frames")
    parser.add_argument("--seq-len", type=int, default=5, help="the longest window (T = 1..seq-len)")
    parser.add_argument("--batch", type=int, default=1, help="windows of one length per step")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, each case once per round")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps of each T per case and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps of each T first (tracing, compiling)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per case and round")
    parser.add_argument("--weights", action="store_true", help="first check that both have as many weights")
    parser.add_argument("--baseline", default=None, metavar="DIR",
                        help="the vseg_keras in DIR (e.g. a git worktree of an older commit) for vseg-baseline: cases")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--torch-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.torch_child:  # one PyTorch case (no TensorFlow there) or one convolutions-only floor
        case = json.loads(args.torch_child)
        run = run_floor_case if case.get("floor") else run_torch_case
        print(json.dumps(run(case, args.seq_len, args.batch, args.repeats, args.warmup)))
        return {}
    from machine import parse_size, report_header, write_report

    if not args.torch_python:
        parser.error("--torch-python is required: a Python with torch (see the module's docstring)")
    args.height, args.width = parse_size(args.size)
    cases = args.case or list(DEFAULT_CASES)
    for case in cases:
        framework, _, variant = case.partition(":")
        if framework not in ("vseg", "vseg-baseline", "torch", "floor") or (
                framework == "torch" and variant not in TORCH_MODES) or (
                framework == "floor" and variant not in FLOORS) or (framework == "vseg-baseline" and not args.baseline):
            parser.error(f"--case {case!r}: expected vseg:SWITCH, vseg-baseline:SWITCH (with --baseline), "
                         f"torch:MODE with MODE in {', '.join(TORCH_MODES)} or floor:FRAMEWORK with FRAMEWORK in "
                         f"{', '.join(FLOORS)}")
    report = report_header("torch_reference", argv)
    if args.weights:
        report["weights"] = weight_counts(args)
        print(json.dumps(report["weights"]), file=sys.stderr)
    results = []
    for round_index in range(args.rounds):
        for case in cases:
            results.append({**measure(case, args), "round": round_index})
            print(json.dumps(results[-1]), file=sys.stderr)
    report.update(results=results, **summarise(results, cases))
    write_report(report, args.out)
    return report


def weight_counts(args: argparse.Namespace) -> dict:
    """Weights of vseg's model (Keras' count) and of the reference (counted alike); they must be equal."""
    from vseg_keras.models.registry import build_model

    vseg = build_model(f"vanilla-cgru-{args.model_size}").count_params()
    command = [args.torch_python, "-c", "import json, sys; sys.path.insert(0, sys.argv[1]); "
               "import torch_reference as r; "
               "print(json.dumps({'torch': r.torch_weight_count(tuple(json.loads(sys.argv[2])))}))",
               os.path.dirname(os.path.abspath(__file__)), json.dumps(SIZES[args.model_size])]
    torch_count = run_child(command, 300).get("torch")
    if torch_count != vseg:
        raise SystemExit(f"the reference has {torch_count} weights, vseg's model {vseg}: not the same network")
    return {"vseg": vseg, "torch": torch_count}


if __name__ == "__main__":
    main()
