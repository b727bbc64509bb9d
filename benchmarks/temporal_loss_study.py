"""Does ``vseg train --temporal-loss`` make predictions steadier? The study of docs/TEMPORAL_LOSS.md.

Two synthetic memory tasks (``vseg synth``), a recurrent model and its frame-wise twin, variants of the
temporal loss, several seeds; every run trains and evaluates as ``vseg train`` / ``vseg evaluate`` do
(each in a child process of its own) and records mIoU, TC (ETC's, DIS flow) and, every third epoch, the
gradient norms of the cross-entropy and temporal terms on a fixed training batch. Results are kept per
run in WORK/results, so an interrupted study resumes where it stopped.

    python benchmarks/temporal_loss_study.py runs --work study --variants off,w1 --seeds 0,1,2
    python benchmarks/temporal_loss_study.py table --work study --variants off,w1
    python benchmarks/temporal_loss_study.py flow --work study      # flow and occlusion-weight quality

About 2.5 minutes per recurrent run and 1 per frame-wise run on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: The memory tasks: the demo's, and one with another seed, frame size and object count.
TASKS = {
    "demo": {"seed": 0, "height": 64, "width": 128, "objects": (3, 5)},
    "crowd": {"seed": 7, "height": 96, "width": 96, "objects": (6, 8)},
}
MODELS = ("vanilla-cgru-small-shallow", "vanilla-none-small-shallow")
#: The demo's training budget (vseg_keras.demo.DemoSettings.full) and its evaluation context.
BUDGET = {"epochs": 24, "steps_per_epoch": 12, "batch_size": 4, "seq_len": 5, "lr": 1e-3}
CONTEXT = 4
#: Loss settings by name (TrainConfig fields); "off" is the run without the loss, "default" the library's
#: defaults at weight 1 (what ``vseg train --temporal-loss 1`` does).


def _loss(weight: float = 1.0, target: str = "labelled", normalization: str = "weight",
          occlusion: str = "photometric", warmup: int = 0, distance: str = "squared") -> dict:
    return {"temporal_loss": weight, "temporal_loss_target": target, "temporal_loss_normalization": normalization,
            "temporal_loss_occlusion": occlusion, "temporal_loss_warmup": warmup, "temporal_loss_distance": distance}


VARIANTS = {
    "off": {},
    "default": {"temporal_loss": 1.0},
    "etc": _loss(target="neither", normalization="pixels"),  # the loss before this study (issue 15)
    "etc-stop": _loss(target="previous", normalization="pixels"),
    "w1": _loss(),
    "previous": _loss(target="previous"),
    "neither": _loss(target="neither"),
    "labelled-pixels": _loss(normalization="pixels"),
    "warmup": _loss(warmup=12),
    "fb": _loss(occlusion="forward-backward"),
    "fb-neither": _loss(target="neither", occlusion="forward-backward"),
    "fb-previous": _loss(target="previous", occlusion="forward-backward"),
    **{f"fb-w{w:g}": _loss(w, occlusion="forward-backward") for w in (0.1, 0.3, 3.0, 10.0, 30.0)},
    **{f"w{w:g}": _loss(w) for w in (0.1, 0.3, 3.0, 10.0, 30.0)},
    "kl-fb": _loss(distance="kl", occlusion="forward-backward"),
    "labels-fb": _loss(target="labels", distance="kl", occlusion="forward-backward"),
    "labels-photometric": _loss(target="labels", distance="kl"),
    "kl-photometric": _loss(distance="kl"),
    "kl-fb-neither": _loss(distance="kl", occlusion="forward-backward", target="neither"),
    "kl-fb-previous": _loss(distance="kl", occlusion="forward-backward", target="previous"),
    "kl-fb-pixels": _loss(distance="kl", occlusion="forward-backward", normalization="pixels"),
    "kl-fb-warmup": _loss(distance="kl", occlusion="forward-backward", warmup=12),
    **{f"kl-fb-w{w:g}": _loss(w, distance="kl", occlusion="forward-backward") for w in (0.3, 3.0, 10.0)},
    # the recommended settings (labels-fb), one choice changed at a time
    **{f"labels-fb-w{w:g}": _loss(w, target="labels", distance="kl", occlusion="forward-backward")
       for w in (0.3, 3.0, 10.0)},
    "labels-fb-pixels": _loss(target="labels", distance="kl", occlusion="forward-backward", normalization="pixels"),
    "labels-fb-warmup": _loss(target="labels", distance="kl", occlusion="forward-backward", warmup=12),
    # the same losses with the generator's true flow and visibility (TRUE_FLOW) in place of DIS and its weight
    "labels-trueflow": _loss(target="labels", distance="kl", occlusion="forward-backward"),
    "etc-trueflow": _loss(target="neither", normalization="pixels"),
}
#: Variants trained with benchmarks.temporal_loss_flow.TrueFlowWarp as the pipeline's warp.
TRUE_FLOW = ("labels-trueflow", "etc-trueflow")
#: Training clips per task (and validation clips).
CLIPS = {"train": 48, "val": 12}


def prepare_task(work: str, task: str) -> str:
    """Synthesises and converts ``task`` into ``work/task/data`` (once); returns the data folder."""
    from data_tools.convert import convert_dataset
    from data_tools.synth import make_synthetic_dataset

    spec, data_dir = TASKS[task], os.path.join(work, task, "data")
    if not os.path.exists(os.path.join(data_dir, "manifest.json")):
        source = os.path.join(work, task, "src")
        make_synthetic_dataset(source, "cityscapes", CLIPS["train"], CLIPS["val"], 1, spec["height"], spec["width"],
                               spec["seed"], overwrite=True, objects=spec["objects"])
        convert_dataset(source, data_dir, layout="cityscapes", height=spec["height"], width=spec["width"],
                        progress=False, overwrite=True)
    return data_dir


def run_name(task: str, model: str, seed: int, variant: str) -> str:
    return f"{task}-{model}-s{seed}-{variant}"


class GradientNorms:
    """A Keras callback factory: after epochs 1, 3, 6, 9, ..., the global gradient norms of the cross-entropy and of the
    (unweighted) temporal term on one fixed training batch, BatchNorm in inference mode."""

    @staticmethod
    def make(data_dir: str, config, log: list):
        import keras
        import tensorflow as tf

        from vseg_keras import data
        from vseg_keras.models.losses import temporal_consistency_loss

        batches = data.make_train_dataset(data_dir, "train", batch_size=config.batch_size,
                                          seq_len=max(config.seq_len, 2), previous_frame_flow="dis",
                                          previous_frame_occlusion=config.temporal_loss_occlusion, seed=12345)
        frames, y = next(batch for batch in batches if batch[0].shape[1] >= 2)
        cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=255)

        class Callback(keras.callbacks.Callback):
            @tf.function
            def measure(self):
                variables = self.model.trainable_variables
                with tf.GradientTape(persistent=True) as tape:
                    pair = self.model.trailing_frames_logits(frames, 2, training=False)
                    ce = cross_entropy(y["labels"], pair[:, -1])
                    temporal = temporal_consistency_loss(pair[:, -1], pair[:, 0], y["previous_index"],
                                                         y["previous_weight"], config.temporal_loss_target,
                                                         config.temporal_loss_normalization,
                                                         config.temporal_loss_distance, y["labels"])
                norms = [tf.linalg.global_norm([g for g in tape.gradient(term, variables) if g is not None])
                         for term in (ce, temporal)]
                return ce, temporal, norms[0], norms[1]

            def on_epoch_end(self, epoch, logs=None):
                if epoch and (epoch + 1) % 3:
                    return  # epochs 1, 3, 6, 9, ...
                values = [float(value) for value in self.measure()]
                log.append(dict(zip(("epoch", "ce", "temporal", "ce_grad_norm", "temporal_grad_norm"),
                                    [epoch + 1, *values], strict=True)))

        return Callback()


def one_run(work: str, task: str, model: str, seed: int, variant: str) -> dict:
    """Trains and evaluates one run (in this process); returns and writes its result."""
    from vseg_keras.evaluate import evaluate_to_files
    from vseg_keras.loading import load_trained_model
    from vseg_keras.train import TrainConfig, train

    data_dir = prepare_task(work, task)
    name = run_name(task, model, seed, variant)
    run_dir = os.path.join(work, "runs", name)
    config = TrainConfig(model=model, seed=seed, **BUDGET, **VARIANTS[variant])
    if variant in TRUE_FLOW:
        from benchmarks.temporal_loss_flow import TrueFlowWarp
        from vseg_keras.data import pipelines

        pipelines.previous_frame_warp = TrueFlowWarp(TASKS[task], CLIPS["train"])
    norms: list = []
    started = time.perf_counter()
    train(data_dir, run_dir, config, callbacks=[GradientNorms.make(data_dir, config, norms)], log=lambda _: None,
          verbose=0)
    seconds = time.perf_counter() - started
    report = evaluate_to_files(load_trained_model(run_dir), data_dir, os.path.join(work, "eval", name),
                               context=CONTEXT, progress=False)
    result = {"task": task, "model": model, "seed": seed, "variant": variant, "options": VARIANTS[variant],
              "miou": report["miou"], "temporal_consistency": report["temporal_consistency"],
              "per_class_iou": report["per_class_iou"],
              "per_class_temporal_consistency": report["per_class_temporal_consistency"],
              "train_seconds": seconds, "gradient_norms": norms}
    path = os.path.join(work, "results", name + ".json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as out:
        json.dump(result, out, indent=1)
    os.replace(path + ".tmp", path)
    return result


def run_grid(work: str, tasks: list[str], models: list[str], seeds: list[int], variants: list[str]) -> None:
    """Every (task, model, seed, variant) without a result yet, each in a child process."""
    for task in tasks:
        prepare_task(work, task)
        for seed in seeds:
            for variant in variants:
                for model in models:
                    name = run_name(task, model, seed, variant)
                    if os.path.exists(os.path.join(work, "results", name + ".json")):
                        continue
                    print(f"{time.strftime('%H:%M:%S')} {name}", flush=True)
                    subprocess.run([sys.executable, os.path.abspath(__file__), "one", "--work", work, "--task", task,
                                    "--model", model, "--seed", str(seed), "--variant", variant], check=True)


def read_results(work: str) -> list[dict]:
    folder = os.path.join(work, "results")
    return [json.load(open(os.path.join(folder, name))) for name in sorted(os.listdir(folder))
            if name.endswith(".json")]


def table(work: str, variants: list[str]) -> str:
    """Markdown: per task, model and variant, mIoU and TC as mean ± standard deviation over the seeds, and
    the change against "off" (means)."""
    results = read_results(work)
    lines = ["| task | model | loss | seeds | mIoU | TC | ΔmIoU | ΔTC | objects' TC |",
             "|---|---|---|--:|--:|--:|--:|--:|--:|"]
    for task in TASKS:
        for model in MODELS:
            base = _mean_of(results, task, model, "off")
            for variant in variants:
                chosen = [r for r in results if (r["task"], r["model"], r["variant"]) == (task, model, variant)]
                if not chosen:
                    continue
                miou = 100 * np.array([r["miou"] for r in chosen])
                tc = 100 * np.array([r["temporal_consistency"] for r in chosen])
                objects = 100 * np.array([np.mean([r["per_class_temporal_consistency"][c]
                                                   for c in ("person", "car", "bicycle")]) for r in chosen])
                delta = (f"{miou.mean() - base[0]:+.1f} | {tc.mean() - base[1]:+.1f}" if base and variant != "off"
                         else " | ")
                lines.append(f"| {task} | {model.split('-')[1]} | {variant} | {len(chosen)} | {_pm(miou)} | {_pm(tc)} "
                             f"| {delta} | {_pm(objects)} |")
    return "\n".join(lines)


def _mean_of(results, task, model, variant):
    chosen = [r for r in results if (r["task"], r["model"], r["variant"]) == (task, model, variant)]
    if not chosen:
        return None
    return (100 * np.mean([r["miou"] for r in chosen]), 100 * np.mean([r["temporal_consistency"] for r in chosen]))


def _pm(values: np.ndarray) -> str:
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1 else f"{values.mean():.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("runs", "one", "table", "flow"))
    parser.add_argument("--work", default="temporal_loss_study")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default="off,w1")
    parser.add_argument("--task")
    parser.add_argument("--model")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--variant")
    parser.add_argument("--video", help="flow: also measure the occlusion weight on this video")
    args = parser.parse_args()
    work = os.path.abspath(args.work)
    if args.command == "one":
        one_run(work, args.task, args.model, args.seed, args.variant)
    elif args.command == "runs":
        run_grid(work, args.tasks.split(","), args.models.split(","), [int(s) for s in args.seeds.split(",")],
                 args.variants.split(","))
    elif args.command == "table":
        print(table(work, args.variants.split(",")))
    else:
        from benchmarks.temporal_loss_flow import flow_study

        print(json.dumps(flow_study(TASKS, args.video), indent=1))


if __name__ == "__main__":
    main()
