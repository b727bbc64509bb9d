"""Block families by name: ``vanilla``, ``resnet``, ``convnext``."""

from __future__ import annotations

from vseg_keras.models.blocks.base import BlockFamily
from vseg_keras.models.blocks.convnext import AttentionGate, ConvNeXtFamily, ReflectionPad2D
from vseg_keras.models.blocks.resnet import ResNetFamily
from vseg_keras.models.blocks.vanilla import VanillaFamily

BLOCK_FAMILIES: dict[str, BlockFamily] = {
    family.name: family for family in (VanillaFamily(), ResNetFamily(), ConvNeXtFamily())
}


def get_block_family(name: str) -> BlockFamily:
    """Returns the block family called ``name``."""
    try:
        return BLOCK_FAMILIES[name]
    except KeyError:
        raise ValueError(
            f"Unknown block family {name!r}; expected one of {sorted(BLOCK_FAMILIES)}."
        ) from None


__all__ = [
    "AttentionGate",
    "BLOCK_FAMILIES",
    "BlockFamily",
    "ConvNeXtFamily",
    "ReflectionPad2D",
    "ResNetFamily",
    "VanillaFamily",
    "get_block_family",
]
