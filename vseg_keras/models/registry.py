"""The model zoo by name: ``{block}-{temporal}-{size}`` (36 configs: the report's 27 and 9 ConvLSTM models)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import keras

from vseg_keras.constants import NUM_CLASSES, SIZES
from vseg_keras.models.blocks import BLOCK_FAMILIES
from vseg_keras.models.layers import check_frame_size
from vseg_keras.models.segmenter import VideoSegmenter
from vseg_keras.models.unet import TEMPORAL_UNITS, VideoUNetBackbone

#: Default number of classes: the 19 Cityscapes train classes plus void, as in the report.
DEFAULT_NUM_CLASSES = NUM_CLASSES


@dataclass(frozen=True)
class ModelConfig:
    """One named architecture of the zoo."""

    name: str
    block: str
    temporal: str
    size: str

    @property
    def filters(self) -> tuple[int, ...]:
        return SIZES[self.size]

    @property
    def levels(self) -> int:
        return len(self.filters)

    @property
    def is_temporal(self) -> bool:
        return self.temporal != "none"

    @property
    def frame_multiple(self) -> int:
        """Frame height and width must be multiples of this."""
        return 2 ** (self.levels - 1)

    @property
    def min_frame_size(self) -> int:
        """Frame height and width must be at least this."""
        return BLOCK_FAMILIES[self.block].min_level_size * self.frame_multiple

    def check_frame_size(self, height: int, width: int, what: str = "Frame size") -> None:
        """``ValueError`` of one line (``what``, the size, the rule) if frames of ``height x width`` break the rule."""
        check_frame_size(height, width, self.frame_multiple, self.min_frame_size, what)


MODEL_CONFIGS: dict[str, ModelConfig] = {
    f"{block}-{temporal}-{size}": ModelConfig(f"{block}-{temporal}-{size}", block, temporal, size)
    for block in BLOCK_FAMILIES
    for temporal in TEMPORAL_UNITS
    for size in SIZES
}


def list_models() -> list[str]:
    """All model names, in registry order (block, then temporal unit, then size)."""
    return list(MODEL_CONFIGS)


def get_model_config(name: str) -> ModelConfig:
    """The :class:`ModelConfig` called ``name``; ``ValueError`` naming close matches otherwise."""
    try:
        return MODEL_CONFIGS[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), MODEL_CONFIGS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown model {name!r}: expected {{block}}-{{temporal}}-{{size}} with block in "
            f"{sorted(BLOCK_FAMILIES)}, temporal in {list(TEMPORAL_UNITS)}, size in {list(SIZES)}."
            f"{hint}"
        ) from None


def build_backbone(name: str) -> VideoUNetBackbone:
    """The backbone of model ``name`` (no head), freshly initialised."""
    config = get_model_config(name)
    return VideoUNetBackbone(config.block, config.temporal, config.filters, name="backbone")


def build_model(name: str, num_classes: int = DEFAULT_NUM_CLASSES, seed: int | None = None,
                dataset: dict | None = None) -> VideoSegmenter:
    """Builds the model called ``name``.

    Args:
        name: ``{block}-{temporal}-{size}``, e.g. ``"resnet-cgru-small-deep"``;
            see :func:`list_models`.
        num_classes: logits per pixel.
        seed: if given, seeds Keras' global random state first so that the
            initial weights are reproducible.
        dataset: the dataset spec's JSON form the model carries (see :class:`VideoSegmenter`).

    Returns:
        A :class:`VideoSegmenter` named ``name``: ``[B, T, H, W, 3]`` frames to
        ``[B, T, H, W, num_classes]`` logits.
    """
    get_model_config(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}.")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return VideoSegmenter(build_backbone(name), num_classes=num_classes, dataset=dataset, name=name)
