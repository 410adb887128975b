"""The ``idd_aw`` reader: IDD-AW (WACV 2024), rgb images per weather condition with level-3 id masks.

Published layout (the IDD-AW download, unpacked; ``root`` is its ``IDDAW`` folder)::

    IDDAW/{train,val}/{FOG,LOWLIGHT,RAIN,SNOW}/rgb/<sequence>/<frame>_rgb.png
    IDDAW/{train,val}/{FOG,LOWLIGHT,RAIN,SNOW}/nir/<sequence>/<frame>_nir.png       # not read
    IDDAW/{train,val}/{FOG,LOWLIGHT,RAIN,SNOW}/gtSeg/<sequence>/<frame>_mask.json   # polygons

IDD-AW publishes its labels as polygons (``*_mask.json``, the IDD/AutoNUE format). Its toolkit
(``createLabels_iddaw.py --id-type level3Id`` from github.com/Furqan7007/IDDAW_kit) renders them
next to the JSON as ``<frame>_labellevel3Ids.png``: IDD's 26 level-3 ids (0..25, 255 = void),
which is what this reader pairs each image with (``label_suffix``). A missing PNG whose JSON is
there is an error that says to run the toolkit.

Domain: the condition folder, through ``conditions`` (FOG -> fog, RAIN -> rainy, SNOW -> snowy,
LOWLIGHT -> night, the names ACDC's reader uses); a condition folder not in it is an error.

Labels: mapped into the 19 Cityscapes train ids by :data:`IDD_LEVEL3_TO_CITYSCAPES`, derived from
the ``csTrainId`` column of IDD's label table (``anue_labels.py``) per level-3 class, listed in
the README. Level 3 merges some level-4 classes, so: drivable fallback (incl. parking),
autorickshaw, vehicle fallback (incl. caravan, trailer, train), curb, guard rail, billboard,
obs-str-bar-fallback and bridge/tunnel -> 255; non-drivable fallback (incl. rail track) ->
terrain; person (incl. animal) -> person; sky (incl. fallback background) -> sky. A ``label_map``
on the source replaces this table.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from proveseg.data.labelmap import LabelMap
from proveseg.readers.base import ReaderError, ReadResult, SourceBase, SplitPresets, pair_labels, walk_images

__all__ = ["IDDAW_CONDITIONS", "IDD_LEVEL3_TO_CITYSCAPES", "IddAwSource"]

IDDAW_CONDITIONS = {"FOG": "fog", "RAIN": "rainy", "SNOW": "snowy", "LOWLIGHT": "night"}

# IDD level-3 id -> (level-3 class, Cityscapes train id or 255)
IDD_LEVEL3_TO_CITYSCAPES: dict[int, tuple[str, int]] = {
    0: ("road", 0),
    1: ("drivable fallback (+ parking)", 255),
    2: ("sidewalk", 1),
    3: ("non-drivable fallback (+ rail track)", 9),
    4: ("person (+ animal)", 11),
    5: ("rider", 12),
    6: ("motorcycle", 17),
    7: ("bicycle", 18),
    8: ("autorickshaw", 255),
    9: ("car", 13),
    10: ("truck", 14),
    11: ("bus", 15),
    12: ("vehicle fallback (+ caravan, trailer, train)", 255),
    13: ("curb", 255),
    14: ("wall", 3),
    15: ("fence", 4),
    16: ("guard rail", 255),
    17: ("billboard", 255),
    18: ("traffic sign", 7),
    19: ("traffic light", 6),
    20: ("pole (+ polegroup)", 5),
    21: ("obs-str-bar-fallback", 255),
    22: ("building", 2),
    23: ("bridge, tunnel", 255),
    24: ("vegetation", 8),
    25: ("sky (+ fallback background)", 10),
    255: ("void (unlabeled, ego vehicle, rectification border, out of roi, license plate)", 255),
}


class IddAwSource(SourceBase):
    """IDD-AW: ``<split>/<CONDITION>/rgb/<seq>/<frame>_rgb.png`` with ``gtSeg/<seq>/<frame>_labellevel3Ids.png``."""

    reader: Literal["idd_aw"] = "idd_aw"
    split: str = "train"
    conditions: dict[str, str] = Field(default_factory=lambda: dict(IDDAW_CONDITIONS))  # folder -> domain
    label_suffix: str = "_labellevel3Ids.png"  # what the IDD-AW toolkit writes for --id-type level3Id

    DEFAULT_SPLITS: ClassVar[SplitPresets | None] = {
        "train": {"split": "train"},
        "val": None,  # the published val split is the test split: give a val of your own (e.g. a take of train)
        "test": {"split": "val"}}

    def read(self) -> ReadResult:
        """Every ``rgb`` image of ``split`` under every condition, paired with its rendered level-3 mask."""
        split_root = self.root / self.split
        if not split_root.is_dir():
            raise ReaderError(f"{split_root}: IDD-AW split folder not found")
        pairs = []
        for condition in sorted(p.name for p in split_root.iterdir() if p.is_dir()):
            if condition not in self.conditions:
                raise ReaderError(f"{split_root / condition}: condition folder {condition!r} is not in conditions "
                                  f"{sorted(self.conditions)}; add it to the source's conditions")
            rgb = split_root / condition / "rgb"
            for img in walk_images(rgb):
                stem = img.name.removesuffix("_rgb.png")
                label = split_root / condition / "gtSeg" / img.relative_to(rgb).parent / f"{stem}{self.label_suffix}"
                pairs.append((img, label, self.conditions[condition]))
        try:
            return pair_labels(self.name, pairs, self.on_invalid)
        except ReaderError as exc:
            polygons = [label for _, label, _ in pairs if not label.exists()
                        and label.with_name(label.name.removesuffix(self.label_suffix) + "_mask.json").exists()]
            if polygons:
                raise ReaderError(f"{exc}; {len(polygons)} of them have only the published polygons (*_mask.json): "
                                  "render the PNGs with the IDD-AW toolkit: python createLabels_iddaw.py "
                                  f"--datadir {split_root}/<CONDITION>/gtSeg --id-type level3Id") from None
            raise

    def builtin_label_map(self) -> LabelMap | None:
        """IDD level-3 ids -> Cityscapes train ids (:data:`IDD_LEVEL3_TO_CITYSCAPES`)."""
        return LabelMap.from_pairs({k: v for k, (_, v) in IDD_LEVEL3_TO_CITYSCAPES.items()},
                                   "idd_aw level-3 -> cityscapes (built in)", self.unmapped)
