"""The model zoo: exact Table 3 sizes, shapes, streaming, serialisation, gradients."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import vseg_keras
from vseg_keras.model_info import frame_gflops, trainable_params, window_gflops
from vseg_keras.models.layers import frame_size_requirement

# One small model per (family, temporal unit), covering both depths.
SMALL_TEMPORAL = [
    "vanilla-crnn-small-shallow",
    "vanilla-cgru-small-deep",
    "resnet-crnn-small-deep",
    "resnet-cgru-small-shallow",
    "convnext-crnn-small-shallow",
    "convnext-cgru-small-deep",
    "resnet-clstm-small-shallow",
]


def random_frames(shape, seed=0):
    """Random RGB pixel values in [0, 255] (float32), what the models take."""
    return np.random.default_rng(seed).uniform(0.0, 255.0, size=shape).astype("float32")


@pytest.fixture(autouse=True)
def _fresh_session():
    yield
    keras.backend.clear_session()


def test_registry_has_all_36_configs():
    names = vseg_keras.list_models()
    assert len(names) == len(set(names)) == 36
    for name in names:
        block, temporal, size = name.split("-", 2)
        config = vseg_keras.get_model_config(name)
        assert (config.block, config.temporal, config.size) == (block, temporal, size)


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown model 'resnet-gru-small-deep'.*resnet-cgru-small-deep"):
        vseg_keras.build_model("resnet-gru-small-deep")


@pytest.mark.parametrize("name", SMALL_TEMPORAL + ["convnext-none-small-shallow"])
def test_streaming_reproduces_sequence_logits(name):
    model = vseg_keras.build_model(name, seed=1)
    frames = random_frames((2, 4, 32, 40, 3))
    expected = model(frames, training=False).numpy()
    assert expected.shape == (2, 4, 32, 40, 20)

    step = model.make_streaming_model()
    states = model.initial_states(2, 32, 40)
    streamed = []
    for t in range(frames.shape[1]):
        outputs = step({"frame": keras.ops.convert_to_tensor(frames[:, t]), **states}, training=False)
        states = {key: outputs[key] for key in states}
        streamed.append(outputs["logits"].numpy())
    np.testing.assert_allclose(np.stack(streamed, axis=1), expected, rtol=0, atol=1e-4)


def test_a_window_from_zero_states_skips_exactly_the_convolutions_of_those_states():
    """vanilla-cgru-small-shallow at 64x128: a window's first step skips the cGRUs' state convolutions (the
    state rows of the gate and candidate kernels, C -> 2C and C -> C, per level); nothing else changes."""
    height, width = 64, 128
    model = vseg_keras.build_model("vanilla-cgru-small-shallow")
    frame, first, three = (frame_gflops(model, height, width), window_gflops(model, 1, height, width),
                           window_gflops(model, 3, height, width))
    state_convs = sum(2 * 9 * c * 3 * c * (height >> level) * (width >> level)
                      for level, c in enumerate((16, 32, 64))) / 1e9
    # The profiler also counts the element-wise ops of those states (their sums and products): a little more.
    assert state_convs < frame - first < state_convs * 1.01
    assert three == pytest.approx(first + 2 * frame, rel=1e-5)
    frame_wise = vseg_keras.build_model("vanilla-none-small-shallow")
    assert window_gflops(frame_wise, 2, height, width) == pytest.approx(2 * frame_gflops(frame_wise, height, width),
                                                                       rel=1e-5)


@pytest.mark.parametrize("name,temporal", [("resnet-cgru-small-shallow", True), ("resnet-none-small-shallow", False)])
def test_later_frames_depend_on_earlier_frames_only_for_temporal_models(name, temporal):
    model = vseg_keras.build_model(name, seed=2)
    frames = random_frames((1, 3, 16, 16, 3))
    changed = frames.copy()
    changed[:, 0] = 255.0 - changed[:, 0]
    before = model(frames, training=False).numpy()
    after = model(changed, training=False).numpy()
    assert np.abs(after[:, 2] - before[:, 2]).max() > 1e-3 if temporal else np.array_equal(after[:, 2], before[:, 2])


def test_one_model_serves_any_sequence_length_and_valid_size():
    model = vseg_keras.build_model("vanilla-crnn-small-deep", seed=3)  # 4 levels: multiples of 8
    for shape in [(1, 1, 8, 8, 3), (2, 5, 24, 40, 3), (1, 2, 64, 16, 3)]:
        assert model(random_frames(shape), training=False).shape == shape[:4] + (20,)

    # The same model traced once with unknown T, H, W runs every valid size.
    traced = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec([None, None, None, None, 3], tf.float32)],
    )
    frames = random_frames((1, 3, 16, 32, 3))
    np.testing.assert_allclose(traced(frames).numpy(), model(frames, training=False).numpy(), atol=1e-5)
    assert traced(random_frames((2, 1, 40, 8, 3))).shape == (2, 1, 40, 8, 20)
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(frame_size_requirement(*model.size_rule))):
        traced(random_frames((1, 2, 20, 16, 3)))


@pytest.mark.parametrize("name,shape,rule", [
    ("vanilla-none-small-shallow", (1, 1, 30, 64, 3), (4, 4)),  # 3 levels
    ("convnext-cgru-small-deep", (1, 2, 32, 36, 3), (8, 32)),  # 4 levels, a 7x7 conv at 1/8
    ("convnext-crnn-small-deep", (1, 2, 16, 64, 3), (8, 32)),
])
def test_bad_frame_size_raises_clear_value_error(name, shape, rule):
    model = vseg_keras.build_model(name)
    assert model.size_rule == rule
    height, width = shape[2], shape[3]
    message = rf"Frame size {height}x{width} \(HxW\) is not supported: {re.escape(frame_size_requirement(*rule))}\."
    with pytest.raises(ValueError, match=f"^{message}$"):
        model.check_frame_size(height, width)
    with pytest.raises(ValueError, match=message):
        model(np.zeros(shape, "float32"))


def all_layers(layer):
    yield layer
    for child in getattr(layer, "_layers", []):
        yield from all_layers(child)
    cell = getattr(layer, "cell", None)
    if cell is not None:
        yield from all_layers(cell)


@pytest.mark.parametrize("name", ["vanilla-cgru-small-shallow", "resnet-crnn-small-shallow",
                                  "convnext-cgru-small-shallow", "resnet-none-small-deep"])
def test_keras_file_round_trip_in_safe_mode(name, tmp_path):
    model = vseg_keras.build_model(name, seed=4)
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in all_layers(model))
    frames = random_frames((1, 3, 16, 16, 3))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, vseg_keras.VideoSegmenter)
    assert loaded.name == name
    assert trainable_params(loaded) == trainable_params(model)
    np.testing.assert_array_equal(loaded(frames, training=False).numpy(), model(frames, training=False).numpy())
    # The streaming model of the loaded model shares its (loaded) weights.
    step = loaded.make_streaming_model()
    frame = keras.ops.convert_to_tensor(frames[:, 0])
    outputs = step({"frame": frame, **loaded.initial_states(1, 16, 16)}, training=False)
    np.testing.assert_allclose(outputs["logits"].numpy(), model(frames[:, :1], training=False).numpy()[:, 0],
                               atol=1e-5)


def test_seeded_builds_are_reproducible():
    first = [w.numpy() for w in vseg_keras.build_model("convnext-crnn-small-shallow", seed=7).weights]
    second = [w.numpy() for w in vseg_keras.build_model("convnext-crnn-small-shallow", seed=7).weights]
    other = [w.numpy() for w in vseg_keras.build_model("convnext-crnn-small-shallow", seed=8).weights]
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("name", ["vanilla-crnn-small-deep", "resnet-cgru-small-shallow",
                                  "convnext-cgru-small-shallow", "convnext-crnn-small-deep"])
def test_last_frame_loss_trains_every_temporal_weight_of_every_level(name):
    model = vseg_keras.build_model(name, seed=5)
    frames = random_frames((2, 3, 32, 32, 3))
    labels = np.random.default_rng(1).integers(0, 20, size=(2, 32, 32))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(labels, model(frames, training=True)[:, -1])
    cells = model.backbone.cells
    assert len(cells) == len(model.backbone.filters)
    variables = [v for cell in cells for v in cell.trainable_weights]
    assert len(variables) == 4 * len(cells)
    gradients = tape.gradient(loss, variables)
    for variable, gradient in zip(variables, gradients, strict=True):
        assert gradient is not None, variable.path
        assert float(tf.reduce_max(tf.abs(gradient))) > 0.0, variable.path


def test_frame_wise_model_has_no_states():
    model = vseg_keras.build_model("vanilla-none-small-shallow")
    assert model.state_shapes() == {}
    step = model.make_streaming_model()
    assert set(step.output) == {"logits"}


def test_state_shapes_follow_levels():
    model = vseg_keras.build_model("resnet-cgru-small-deep")
    assert model.state_shapes(64, 128, 2) == {
        "state_0": (2, 64, 128, 16),
        "state_1": (2, 32, 64, 32),
        "state_2": (2, 16, 32, 64),
        "state_3": (2, 8, 16, 128),
    }
    lstm = vseg_keras.build_model("vanilla-clstm-small-shallow")  # two states per level, named by kind
    assert lstm.state_shapes(64, 128, 2) == {
        "state_0_h": (2, 64, 128, 16), "state_0_c": (2, 64, 128, 16),
        "state_1_h": (2, 32, 64, 32), "state_1_c": (2, 32, 64, 32),
        "state_2_h": (2, 16, 32, 64), "state_2_c": (2, 16, 32, 64),
    }


def test_models_take_raw_pixels_and_normalise_them_in_float32():
    from vseg_keras.models.layers import IMAGENET_MEAN, IMAGENET_STD, FrameNormalization

    pixels = np.random.default_rng(3).integers(0, 256, size=(1, 2, 16, 16, 3), dtype=np.uint8)
    normalised = FrameNormalization()(pixels)
    assert normalised.dtype == "float32"
    expected = (pixels / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(normalised, expected, atol=1e-5)
    np.testing.assert_allclose(FrameNormalization()(np.array(IMAGENET_MEAN) * 255.0), 0.0, atol=1e-5)

    model = vseg_keras.build_model("vanilla-cgru-small-shallow", seed=4)
    from_uint8 = model(pixels, training=False).numpy()
    np.testing.assert_array_equal(from_uint8, model(pixels.astype("float32"), training=False).numpy())
    backbone_logits = model.head(keras.ops.reshape(model.backbone(expected.astype("float32")), (2, 16, 16, 16)))
    np.testing.assert_allclose(from_uint8.reshape(2, 16, 16, 20), backbone_logits, atol=1e-4)

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = FrameNormalization()
        assert layer.compute_dtype == "float32" and layer(pixels).dtype == "float32"
        assert FrameNormalization.from_config(layer.get_config()).compute_dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_logits_are_float32_under_a_mixed_precision_policy():
    pixels = np.random.default_rng(5).integers(0, 256, size=(1, 2, 16, 16, 3), dtype=np.uint8)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = vseg_keras.build_model("vanilla-cgru-small-shallow", seed=6)
        assert model.head.compute_dtype == "bfloat16"
        logits = model(pixels, training=False)
        assert logits.dtype == "float32"
        streaming = model.make_streaming_model()
        step = streaming({"frame": keras.ops.convert_to_tensor(pixels[:, 0]), **model.initial_states(1, 16, 16)})
        assert step["logits"].dtype == "float32"
        # The cast is exact: the float32 logits are the head's bf16 values.
        head_logits = model.head(keras.ops.reshape(model.backbone(model.normalization(pixels)), (2, 16, 16, 16)))
        expected = keras.ops.cast(head_logits, "float32")
        np.testing.assert_array_equal(keras.ops.reshape(logits, (2, 16, 16, 20)), expected)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision_features_cross_sub_model_boundaries_in_bfloat16():
    """A functional sub-model (stage, encoder, decoder) casts its inputs to its ``Input``'s dtype: built in a
    mixed policy, they are bfloat16, so no feature map is cast to float32 and back between stages (forward or
    backward); the frames are cast to bfloat16 once."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = vseg_keras.build_model("vanilla-cgru-small-shallow", seed=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")

    def loss_and_gradients(pixels):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(pixels, training=True))
        return loss, tape.gradient(loss, model.trainable_weights)

    graph = tf.function(loss_and_gradients).get_concrete_function(tf.TensorSpec((1, 2, 32, 64, 3), tf.uint8)).graph
    casts = [(op.inputs[0].dtype.name, op.outputs[0].dtype.name) for op in graph.get_operations()
             if op.type == "Cast" and op.outputs[0].shape.rank == 4
             and op.inputs[0].shape[1] > 3 and op.inputs[0].shape[-1] != 3]  # feature maps: not kernels, not frames
    assert ("bfloat16", "float32") not in casts and ("float32", "bfloat16") not in casts
    frame_casts = [op.name for op in graph.get_operations() if op.type == "Cast" and op.outputs[0].shape.rank == 5
                   and op.outputs[0].shape[-1] == 3 and op.outputs[0].dtype == tf.bfloat16]
    assert len(frame_casts) == 1, frame_casts  # not once per level: UnfoldTime reads its reference's shape only


def test_the_config_records_the_dtype_policy_and_vseg_loads_float32_for_inference(tmp_path):
    from vseg_keras.loading import load_trained_model

    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # as vseg train --mixed-precision builds it
    try:
        model = vseg_keras.build_model("vanilla-clstm-small-shallow", seed=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_config()["dtype"]["config"]["name"] == "mixed_bfloat16"
    path = str(tmp_path / "mixed.keras")
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)  # Keras restores the recorded policy
    assert restored.dtype_policy.name == restored.backbone.cells[0].dtype_policy.name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # and leaves the global one as it was
    inference = load_trained_model(path)  # vseg's evaluate, export and predict compute in float32
    assert inference.backbone.cells[0].dtype_policy.name == "float32"
    # ... with float32 sub-model inputs (a mixed build's take bfloat16 features: no casts at stage boundaries)
    assert {t.dtype for t in inference.backbone.decoder.inputs} == {"float32"}
    assert {t.dtype for t in model.backbone.decoder.inputs} == {"bfloat16"}
    for ours, saved in zip(inference.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, saved)
    assert load_trained_model(path, keep_policy=True).head.dtype_policy.name == "mixed_bfloat16"
    frames = random_frames((1, 2, 32, 32, 3))
    np.testing.assert_allclose(inference(frames).numpy(), restored(frames).numpy(), atol=0.1)
    float32 = vseg_keras.build_model("vanilla-none-small-shallow")
    assert float32.get_config()["dtype"]["config"]["name"] == "float32"


def test_mixed_precision_on_a_cpu_without_bfloat16_instructions_gets_a_note():
    from vseg_keras.distribute import cpu_lacks_bfloat16, mixed_precision_note

    zen3 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    sapphire_rapids = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16\n"
    assert cpu_lacks_bfloat16(zen3) and not cpu_lacks_bfloat16(sapphire_rapids)
    assert not cpu_lacks_bfloat16("processor\t: 0\nFeatures\t: fp asimd bf16\n")  # not x86: cannot tell
    assert mixed_precision_note("mixed_float16") is None  # a GPU's policy
    note = mixed_precision_note("mixed_bfloat16")
    assert (note is not None) == cpu_lacks_bfloat16() and (note is None or "--mixed-precision" in note)


@pytest.mark.skipif(__import__("platform").machine().lower() not in ("x86_64", "amd64"), reason="oneDNN: x86 only")
def test_auto_cpu_kernels_follow_the_model_and_task_on_a_cpu_without_avx512(monkeypatch):
    from vseg_keras import cpu_kernels
    from vseg_keras.options import TrainConfig

    zen3 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    genoa = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
    assert [cpu_kernels.full_resolution_channels(name) for name in
            ("vanilla-cgru-original", "convnext-clstm-small-deep", "resnet-none-small-shallow", "mine")] == [
        64, 16, 16, None]
    prefer = cpu_kernels.preferred_cpu_kernels
    assert prefer("vanilla-cgru-original", zen3) == "eigen" and prefer("resnet-none-original", zen3) == "eigen"
    assert prefer("vanilla-cgru-small-deep", zen3) == "onednn" and prefer(None, zen3) == "onednn"
    assert prefer("convnext-cgru-original", zen3) == "onednn"  # depthwise and 1x1 convolutions: faster on oneDNN
    assert prefer("vanilla-cgru-original", genoa) == "onednn"
    # Inference (evaluate, predict, export) streams faster on Eigen there, but for frame-wise ConvNeXt models.
    assert [prefer(name, zen3, task="infer") for name in ("vanilla-cgru-small-shallow", "convnext-cgru-original",
                                                          "convnext-none-original", None)] == [
        "eigen", "eigen", "onednn", "eigen"]
    assert prefer("vanilla-cgru-small-shallow", genoa, task="infer") == "onednn"
    with pytest.raises(ValueError, match="task must be one of train, infer, got 'serve'"):
        cpu_kernels.select_cpu_kernels("auto", None, "serve")
    # TensorFlow is loaded here: training logs the kernels that run, and where the choice asked for the others,
    # why it could not have them and how to get them.
    active = cpu_kernels.active_cpu_kernels()
    other, names = {"onednn": "eigen", "eigen": "onednn"}[active], {"onednn": "oneDNN", "eigen": "Eigen"}
    plain = f"CPU kernels: TensorFlow's {names[active]}"
    assert cpu_kernels.cpu_kernels_line(active, "vanilla-cgru-original") == plain
    line = cpu_kernels.cpu_kernels_line(other, "vanilla-cgru-original")
    assert line.startswith(f"{plain}, not the {names[other]} ones --cpu-kernels {other} picks for vanilla-cgru")
    assert line.endswith(f"set TF_ENABLE_ONEDNN_OPTS={int(other == 'onednn')})")
    monkeypatch.setattr(cpu_kernels, "USER_SETTING", None)
    for model, cpu in (("vanilla-cgru-small-shallow", zen3), ("vanilla-cgru-original", zen3),
                       ("vanilla-cgru-original", genoa)):
        line = cpu_kernels.cpu_kernels_line("auto", model, cpu)
        assert (line == plain) == (prefer(model, cpu) == active) and line.startswith(plain)
    monkeypatch.setattr(cpu_kernels, "USER_SETTING", "1")  # the user's own setting wins over auto: no advice
    assert cpu_kernels.cpu_kernels_line("auto", "vanilla-cgru-original", zen3) == plain
    assert cpu_kernels.select_cpu_kernels("eigen", "vanilla-cgru-original") == active  # too late to change
    with pytest.raises(ValueError, match="cpu_kernels must be one of auto, onednn, eigen, got 'mkl'"):
        cpu_kernels.select_cpu_kernels("mkl")
    with pytest.raises(ValueError, match="cpu_kernels must be one of auto, onednn, eigen, got 'mkl'"):
        TrainConfig(model="vanilla-cgru-small-shallow", cpu_kernels="mkl")
