"""The model package on other Keras backends (JAX here), its imports, and weights moving between backends.

Keras fixes its backend per process, so the JAX side runs in subprocesses (``KERAS_BACKEND=jax``).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import vseg_keras.models  # noqa: F401  (registers the layers that loading needs)

ROOT = Path(__file__).resolve().parents[1]


def run_on(backend: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


#: The portable tests in two halves of about a minute each (a JAX process per half, no workers of its
#: own), so that the suite's two workers share them; the halves are complements, so none is left out.
PORTABLE_HALF = "table_3 or loss_by_hand or plain_keras_rnn or custom_layer or round_trip"


@pytest.mark.parametrize("selection", [PORTABLE_HALF, f"not ({PORTABLE_HALF})"], ids=["first-half", "second-half"])
def test_the_portable_model_tests_pass_on_jax(selection):
    result = run_on("jax", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-o", "addopts=-ra",
                    "-k", selection, "tests/test_portable_models.py")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout and " deselected" in result.stdout


def test_models_built_on_jax_without_tensorflow_give_the_same_logits_on_tensorflow(tmp_path):
    """On JAX, importing the model package and building and calling models import neither TensorFlow
    nor cityscapesscripts; a model saved there gives the same logits on TensorFlow."""
    code = (
        "import sys, json, numpy as np, keras, vseg_keras.models as vm\n"
        "model = vm.build_model('convnext-cgru-small-deep')  # no seed: keras.utils.set_random_seed imports TF\n"
        "frames = np.random.default_rng(1).integers(0, 256, size=(1, 3, 32, 32, 3), dtype=np.uint8)\n"
        "logits = keras.ops.convert_to_numpy(model(frames))\n"
        "print(json.dumps([keras.backend.backend(), [m for m in ('tensorflow', 'cityscapesscripts')"
        " if m in sys.modules]]))\n"
        "model.save(sys.argv[1] + '/model.keras')  # Keras' saving may use TensorFlow's file IO when present\n"
        "np.savez(sys.argv[1] + '/logits.npz', frames=frames, logits=logits)\n"
    )
    result = run_on("jax", "-c", code, str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["jax", []]
    model = keras.saving.load_model(str(tmp_path / "model.keras"), safe_mode=True)
    saved = np.load(tmp_path / "logits.npz")
    logits = keras.ops.convert_to_numpy(model(saved["frames"]))
    np.testing.assert_allclose(logits, saved["logits"], rtol=1e-4, atol=1e-4)
    keras.backend.clear_session()


def test_the_training_recipe_compiles_a_jitted_step_on_jax_without_tensorflow():
    """``compile_for_training`` needs no TensorFlow (what ``benchmarks/gpu_train_step.py`` runs on a GPU machine
    without it) and, on JAX, compiles the step with XLA: Keras' JAX trainer runs it op by op otherwise."""
    code = (
        "import sys, json, numpy as np, keras\n"
        "from vseg_keras.models.registry import build_model\n"
        "from vseg_keras.models.training_model import TrainingModel\n"
        "from vseg_keras.train import TrainConfig, compile_for_training\n"
        "model = TrainingModel(build_model('vanilla-cgru-small-shallow'), 'last_frame')\n"
        "compile_for_training(model, TrainConfig(model='vanilla-cgru-small-shallow'))\n"
        "rng = np.random.default_rng(0)\n"
        "logs = model.train_on_batch(rng.integers(0, 256, (1, 2, 32, 64, 3), np.uint8),\n"
        "                            rng.integers(0, 20, (1, 32, 64), np.uint8), return_dict=True)\n"
        "print(json.dumps([bool(model.jit_compile), float(logs['loss']), 'tensorflow' in sys.modules]))\n"
    )
    result = run_on("jax", "-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    jitted, loss, tensorflow_imported = json.loads(result.stdout.strip().splitlines()[-1])
    assert jitted and np.isfinite(loss) and loss > 0 and not tensorflow_imported


def _imports(path: Path, package_root: Path) -> set[str]:
    """The ``vseg_keras`` modules that ``path`` imports, at any level of the file."""
    modules = {_module_name(p, package_root) for p in package_root.rglob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a import b` imports the module a.b when there is one, else a name of a.
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return {name for name in found if name in modules}


def _module_name(path: Path, package_root: Path) -> str:
    parts = path.relative_to(package_root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles_in_vseg_keras():
    package = ROOT / "vseg_keras"
    graph = {_module_name(p, package): _imports(p, package) for p in package.rglob("*.py")}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*path, module, target]))
            if target not in state:
                visit(target, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert "vseg_keras.models.remat" in graph and graph["vseg_keras.models.temporal"]


@pytest.mark.skipif(__import__("platform").machine().lower() not in ("x86_64", "amd64"), reason="oneDNN: x86 only")
def test_tensorflows_cpu_kernels_are_chosen_before_it_loads_and_a_users_setting_wins_over_auto():
    """Importing vseg turns oneDNN on; ``select_cpu_kernels`` (what ``vseg train`` calls first) picks per model."""
    from vseg_keras.cpu_kernels import preferred_cpu_kernels

    check = ("import os, sys, vseg_keras; from vseg_keras.cpu_kernels import select_cpu_kernels as select; "
             "chosen = select(*sys.argv[1:]) if sys.argv[1:] else 'import'; import tensorflow; "
             "from tensorflow.python.util import _pywrap_util_port as port; "
             "print(chosen, os.environ['TF_ENABLE_ONEDNN_OPTS'], port.IsMklEnabled())")
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    original = preferred_cpu_kernels("vanilla-cgru-original")  # eigen without AVX-512, else onednn
    for setting, args, expected in (
            (None, [], "import 1 True"), ("0", [], "import 0 False"),
            (None, ["auto", "vanilla-cgru-original"], f"{original} {int(original == 'onednn')} {original == 'onednn'}"),
            ("0", ["auto", "vanilla-cgru-small-shallow"], "eigen 0 False"),  # the user's value wins over auto
            ("1", ["eigen", "vanilla-cgru-small-shallow"], "eigen 0 False"),  # an explicit choice wins over it
            (None, ["auto", "convnext-none-original", "infer"], "onednn 1 True")):  # oneDNN wherever it is
        chosen = env if setting is None else {**env, "TF_ENABLE_ONEDNN_OPTS": setting}
        result = subprocess.run([sys.executable, "-c", check, *args], capture_output=True, text=True, cwd=ROOT,
                                env={**chosen, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
        assert result.stdout.split()[-3:] == expected.split(), (setting, args, result.stderr[-2000:])
