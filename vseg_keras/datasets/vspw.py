"""The VSPW dataset spec, read from the release's ``label_num_dic_final.json``.

VSPW (Miao et al., CVPR 2021) labels every frame with raw values 0-124 and 255: 0 is "others" and 255
void, and both are ignored; raw values 1-124 are the 124 classes, train ids 0-123 (the
"reduce zero label" convention of CFFM, MRCFA and TV3S). Its mIoU is the mean over the classes present
in the ground truth (VSPW's and CFFM's evaluators), and videos are evaluated streamed from their first
frame.
"""

from __future__ import annotations

from typing import Any

from vseg_keras.datasets.spec import ClassInfo, DatasetSpec, SpecError, generated_palette

#: The raw value of VSPW's "others" class, ignored like void (255).
OTHERS_ID = 0


def vspw_spec(label_dict: Any, where: str = "label_num_dic_final.json",
              colors: list[tuple[int, int, int]] | None = None) -> DatasetSpec:
    """The spec of a VSPW release from its class dictionary ``{"others": "0", "wall": "1", ...}``.

    The ids are strings and the entries need not be in id order; classes are put in id order.

    Args:
        label_dict: the parsed ``label_num_dic_final.json``.
        where: the file, named in errors.
        colors: RGB colour per raw value (e.g. a label PNG's palette); default: generated colours.

    Raises:
        SpecError: one line naming ``where`` if the dictionary is not class name -> id 0-255, or has no class.
    """
    if not isinstance(label_dict, dict) or not label_dict:
        raise SpecError(f"{where}: expected a JSON object mapping class names to ids, such as "
                        "{\"others\": \"0\", \"wall\": \"1\", ...}")
    by_id: dict[int, str] = {}
    for name, value in label_dict.items():
        try:
            raw = int(str(value).strip())
        except ValueError:
            raw = -1
        if not 0 <= raw <= 255 or raw in by_id:
            raise SpecError(f"{where}: class {name!r} has id {value!r}; expected a distinct integer 0-255")
        by_id[raw] = str(name)
    ids = sorted(i for i in by_id if i not in (OTHERS_ID, 255))
    if not ids:
        raise SpecError(f"{where}: no class besides \"others\" (0) and void (255)")
    palette = colors or generated_palette(256)
    classes = tuple(ClassInfo(by_id[i], i, tuple(palette[i])) for i in ids)
    return DatasetSpec(name="vspw", classes=classes, ignore_index=255, ignored_ids=(OTHERS_ID,),
                       miou="ground_truth", protocol="stream")
