"""Datasets as data: the dataset spec (:mod:`.spec`) and the specs vseg knows (:mod:`.cityscapes`, :mod:`.vspw`).

A converted folder's ``manifest.json`` holds its spec (:func:`spec_of_manifest`), and a trained model
carries the spec of the data it learned (:func:`spec_of_model`), so every command reads class names,
colours, label maps and the mIoU convention from the data or the model, never from code.
"""

from __future__ import annotations

from typing import Any

from vseg_keras.datasets.spec import (
    IGNORE_INDEX,
    MIOU_CONVENTIONS,
    PROTOCOLS,
    ClassInfo,
    DatasetSpec,
    SpecError,
    generated_palette,
    generic_spec,
)

__all__ = ["IGNORE_INDEX", "MIOU_CONVENTIONS", "PROTOCOLS", "ClassInfo", "DatasetSpec", "SpecError",
           "generated_palette", "generic_spec", "spec_of_manifest", "spec_of_model"]


def spec_of_manifest(manifest: dict, where: str = "manifest.json") -> DatasetSpec:
    """The spec of a converted folder: its manifest's ``dataset`` entry, or Cityscapes for a schema-v1
    manifest (v1 conversions were all Cityscapes-layout).

    Raises:
        SpecError: one line naming ``where`` if the entry is malformed.
    """
    if "dataset" not in manifest:
        from vseg_keras.datasets.cityscapes import CITYSCAPES

        return CITYSCAPES
    return DatasetSpec.from_json(manifest["dataset"], where=f"{where}: \"dataset\"")


def spec_of_model(dataset: dict[str, Any] | None, num_logits: int | None, where: str = "model") -> DatasetSpec:
    """The spec a model carries (its ``dataset`` config), or for a model saved before models carried one:
    Cityscapes when it has Cityscapes' 20 logits (every such run trained on Cityscapes-layout data), or
    when its logits are unknown (``None``: an edge file, which outputs labels), else numbered classes.

    Raises:
        SpecError: the carried spec is malformed or does not match the model's logits (one line).
    """
    if dataset is None:
        from vseg_keras.datasets.cityscapes import CITYSCAPES

        return CITYSCAPES if num_logits in (None, CITYSCAPES.num_logits) else generic_spec(num_logits)
    spec = DatasetSpec.from_json(dataset, where=f"{where}: dataset")
    if num_logits is not None and spec.num_logits != num_logits:
        raise SpecError(f"{where}: its dataset {spec.name!r} has {spec.num_logits} classes but the model "
                        f"outputs {num_logits} logits")
    return spec
