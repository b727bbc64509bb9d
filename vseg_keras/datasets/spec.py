"""The dataset spec: what a dataset's label values mean, how they are trained on and how they are scored.

A :class:`DatasetSpec` is data, not code: ``vseg convert`` writes it into ``manifest.json``, a trained
model carries it in its ``.keras`` file (and its SavedModel, ``.tflite`` and ``.onnx`` exports), and
every command reads it from there. Its JSON form (:meth:`DatasetSpec.to_json`) is also the
``dataset.json`` a user writes for the ``folders`` layout::

    {"name": "my-dataset",
     "classes": [{"name": "background", "id": 0, "color": [0, 0, 0]},
                 {"name": "person", "id": 1, "color": [220, 20, 60]}],
     "ignore_index": 255}

Label values, two kinds:

* **raw values**: what the dataset's label PNGs hold (Cityscapes labelIds, VSPW's 0-124 and 255, a
  user's ``id`` values). Converted data stores them unchanged (schema v2).
* **train ids**: ``0 .. C-1`` for the spec's classes in order, :data:`IGNORE_INDEX` (255) for every
  pixel without a usable label. Models, losses and metrics see only train ids; :meth:`~DatasetSpec.lut`
  maps one to the other.

This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import colorsys
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: The train id of every pixel that has no usable label (void, unknown raw values, padding, frames without GT).
IGNORE_INDEX = 255
#: Most classes a spec can have: train ids are uint8 and 255 is :data:`IGNORE_INDEX`.
MAX_CLASSES = 254
#: mIoU conventions: the mean over scored classes with a non-empty union (TP + FP + FN > 0; the Cityscapes
#: evaluator and mmsegmentation), or over scored classes present in the ground truth (VSPW, CFFM).
MIOU_CONVENTIONS = ("union", "ground_truth")
#: Evaluation protocols: windows ending at each snippet's labelled frame (the report's Cityscapes
#: protocol), or every clip streamed from its first frame with every labelled frame scored (videos).
PROTOCOLS = ("windows", "stream")


class SpecError(ValueError):
    """A dataset spec (``dataset.json``, a manifest's ``dataset`` entry) is not what vseg expects."""


@dataclasses.dataclass(frozen=True)
class ClassInfo:
    """One class of a dataset.

    Attributes:
        name: the class name (shown in reports and legends).
        raw_id: the raw label value of the class in the dataset's label PNGs (0-255).
        color: RGB colour of overlays and legends.
        scored: whether the class counts in the mIoU (an unscored class is trained, and its ground-truth
            pixels are ignored in the scores, as void is).
    """

    name: str
    raw_id: int
    color: tuple[int, int, int]
    scored: bool = True


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What the label values of a dataset mean (see the module docstring).

    Attributes:
        name: the dataset's name, e.g. ``"cityscapes"``.
        classes: the classes in train-id order (train id ``i`` is ``classes[i]``).
        ignore_index: the raw value of void pixels (ignored in training and scores).
        ignored_ids: other raw values the dataset defines but does not train on (Cityscapes' void
            labelIds, VSPW's 0 "others"); values outside these, the classes and ``ignore_index`` are
            stray (ignored too, and counted by ``vseg convert``).
        void_class: the report's extra "void" logit: name and colour of train id ``len(classes)``,
            which ``vseg train --void-as-class`` trains void pixels as; ``None`` for no such logit.
        miou: the mIoU convention, one of :data:`MIOU_CONVENTIONS`.
        protocol: how ``vseg evaluate`` runs the model, one of :data:`PROTOCOLS`.
    """

    name: str
    classes: tuple[ClassInfo, ...]
    ignore_index: int = 255
    ignored_ids: tuple[int, ...] = ()
    void_class: ClassInfo | None = None
    miou: str = "union"
    protocol: str = "stream"

    def __post_init__(self) -> None:
        _check_spec(self)

    @property
    def num_classes(self) -> int:
        """``C``: the classes (train ids ``0 .. C-1``)."""
        return len(self.classes)

    @property
    def num_logits(self) -> int:
        """The logits per pixel a model of this dataset outputs: ``C``, plus one with a void class."""
        return self.num_classes + (self.void_class is not None)

    @property
    def scored_logits(self) -> list[bool]:
        """Per logit (the void class last, if any), whether it is a scored class."""
        return [c.scored for c in self.classes] + [False] * (self.void_class is not None)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def scored(self) -> np.ndarray:
        """bool ``[C]``: whether each train id counts in the scores."""
        return np.array([c.scored for c in self.classes], bool)

    def lut(self, void_as_class: bool = False) -> np.ndarray:
        """``lut[raw] -> train id`` (uint8 ``[256]``), :data:`IGNORE_INDEX` for every raw value that is
        not a class; with ``void_as_class`` those map to the void class instead (see :attr:`void_class`)."""
        if void_as_class and self.void_class is None:
            raise SpecError(f"dataset {self.name!r} has no void class to train void pixels as "
                            "(--void-as-class is the report's Cityscapes set-up); leave it out")
        lut = np.full(256, self.num_classes if void_as_class else IGNORE_INDEX, np.uint8)
        for train_id, info in enumerate(self.classes):
            lut[info.raw_id] = train_id
        return lut

    def train_to_raw(self) -> np.ndarray:
        """``table[train id] -> raw value`` (uint8 ``[256]``, e.g. Cityscapes labelIds for its result files);
        ignored and void pixels get the first of :attr:`ignored_ids` (Cityscapes: 0, "unlabeled"), else
        :attr:`ignore_index`."""
        table = np.full(256, self.ignored_ids[0] if self.ignored_ids else self.ignore_index, np.uint8)
        table[: self.num_classes] = [c.raw_id for c in self.classes]
        return table

    def known_values(self) -> np.ndarray:
        """bool ``[256]``: the raw values the dataset defines (the others are stray)."""
        known = np.zeros(256, bool)
        known[[c.raw_id for c in self.classes] + list(self.ignored_ids) + [self.ignore_index]] = True
        return known

    def palette(self) -> np.ndarray:
        """uint8 ``[256, 3]``: the RGB colour of every train id (the void class included); black elsewhere."""
        palette = np.zeros((256, 3), np.uint8)
        palette[: self.num_classes] = [c.color for c in self.classes]
        if self.void_class is not None:
            palette[self.num_classes] = self.void_class.color
        return palette

    def colorize(self, train_ids: np.ndarray) -> np.ndarray:
        """The RGB colours ``[..., 3]`` (uint8) of a train-id map ``[...]``."""
        return self.palette()[np.asarray(train_ids, np.uint8)]

    def to_json(self) -> dict[str, Any]:
        """The JSON form (what :meth:`from_json` reads; the ``dataset.json`` format plus optional fields)."""
        return {
            "name": self.name,
            "classes": [_class_json(c) for c in self.classes],
            "ignore_index": self.ignore_index,
            "ignored_ids": list(self.ignored_ids),
            "void_class": None if self.void_class is None else {"name": self.void_class.name,
                                                                "color": list(self.void_class.color)},
            "miou": self.miou,
            "protocol": self.protocol,
        }

    @classmethod
    def from_json(cls, value: Any, where: str = "dataset spec", name: str = "dataset") -> DatasetSpec:
        """Reads the JSON form (e.g. a ``dataset.json``), checking every field.

        Only ``classes`` is required; each class needs ``name`` and ``id`` (its raw value), ``color``
        defaults to a generated colour and ``scored`` to true. ``ignore_index`` defaults to 255,
        ``miou`` to ``"union"`` and ``protocol`` to ``"stream"``.

        Args:
            value: the parsed JSON.
            where: the file (or entry) it came from, named in errors.
            name: the dataset's name when the JSON gives none.

        Raises:
            SpecError: one line naming ``where``, the field and what was expected.
        """
        if not isinstance(value, Mapping):
            raise SpecError(f"{where}: expected a JSON object with a \"classes\" list, got {type(value).__name__}")
        classes = value.get("classes")
        if not isinstance(classes, list) or not classes:
            raise SpecError(f"{where}: \"classes\" must be a non-empty list of "
                            "{\"name\": ..., \"id\": ..., \"color\": [r, g, b]} objects")
        colors = generated_palette(len(classes))
        parsed = tuple(_class_from_json(item, i, colors[i], where) for i, item in enumerate(classes))
        void, ignored = value.get("void_class"), value.get("ignored_ids", [])
        if void is not None and not isinstance(void, Mapping):
            raise SpecError(f"{where}: \"void_class\" must be null or {{\"name\": ..., \"color\": [r, g, b]}}")
        if not isinstance(ignored, list):
            raise SpecError(f"{where}: \"ignored_ids\" must be a list of label values 0-255, got {ignored!r}")
        ignore_index = _raw_value(value.get("ignore_index", 255), f"{where}: \"ignore_index\"")
        fields = {
            "name": str(value.get("name") or name),
            "classes": parsed,
            "ignore_index": ignore_index,
            "ignored_ids": tuple(_raw_value(v, f"{where}: \"ignored_ids\"") for v in ignored),
            "void_class": None if void is None else _class_from_json(
                {**void, "id": ignore_index, "scored": False}, "void_class", (0, 0, 0), where),
            "miou": value.get("miou", "union"),
            "protocol": value.get("protocol", "stream"),
        }
        try:
            return cls(**fields)
        except SpecError as error:
            raise SpecError(f"{where}: {error}") from None


def generated_palette(count: int) -> list[tuple[int, int, int]]:
    """``count`` distinct, saturated RGB colours (golden-ratio hues), for classes given without one."""
    colors = []
    for i in range(count):
        hue = (i * 0.6180339887) % 1.0
        value = 0.95 if i % 2 == 0 else 0.7
        colors.append(tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, 0.75, value)))
    return colors


def generic_spec(num_classes: int, name: str = "unknown") -> DatasetSpec:
    """A spec for a model that carries none: classes ``class 0 .. class n-1`` with generated colours."""
    colors = generated_palette(num_classes)
    return DatasetSpec(name, tuple(ClassInfo(f"class {i}", i, colors[i]) for i in range(num_classes)))


def _class_json(info: ClassInfo) -> dict[str, Any]:
    entry = {"name": info.name, "id": info.raw_id, "color": list(info.color)}
    if not info.scored:
        entry["scored"] = False
    return entry


def _raw_value(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
        raise SpecError(f"{what} must be an integer label value 0-255, got {value!r}")
    return value


def _class_from_json(item: Any, index: int | str, default_color, where: str) -> ClassInfo:
    what = f"{where}: class {index}"
    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"].strip():
        raise SpecError(f"{what}: expected {{\"name\": \"...\", \"id\": <0-255>, \"color\": [r, g, b]}}, got {item!r}")
    color = item.get("color", default_color)
    if (not isinstance(color, Sequence) or isinstance(color, str) or len(color) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)):
        raise SpecError(f"{what} ({item['name']}): \"color\" must be [r, g, b] with integers 0-255, got {color!r}")
    scored = item.get("scored", True)
    if not isinstance(scored, bool):
        raise SpecError(f"{what} ({item['name']}): \"scored\" must be true or false, got {scored!r}")
    raw_id = _raw_value(item.get("id"), f"{what} ({item['name']}): \"id\"")
    return ClassInfo(item["name"], raw_id, tuple(int(c) for c in color), scored)


def _check_spec(spec: DatasetSpec) -> None:
    """Raises :class:`SpecError` (one line) for an inconsistent spec."""
    if not 1 <= spec.num_logits <= MAX_CLASSES:
        raise SpecError(f"{spec.num_classes} classes: a dataset needs 1 to {MAX_CLASSES} (with its void class)")
    seen: dict[int, str] = {}
    for info in spec.classes:
        if info.raw_id in seen:
            raise SpecError(f"classes {seen[info.raw_id]!r} and {info.name!r} have the same id {info.raw_id}")
        seen[info.raw_id] = info.name
    for value in (spec.ignore_index, *spec.ignored_ids):
        if value in seen:
            raise SpecError(f"id {value} is both class {seen[value]!r} and an ignored value")
    names = [c.name for c in spec.classes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(f"class name {duplicates[0]!r} is used twice")
    if spec.miou not in MIOU_CONVENTIONS:
        raise SpecError(f"\"miou\" must be one of {', '.join(MIOU_CONVENTIONS)}, got {spec.miou!r}")
    if spec.protocol not in PROTOCOLS:
        raise SpecError(f"\"protocol\" must be one of {', '.join(PROTOCOLS)}, got {spec.protocol!r}")
    if not any(c.scored for c in spec.classes):
        raise SpecError("no class is scored; at least one needs \"scored\": true")
