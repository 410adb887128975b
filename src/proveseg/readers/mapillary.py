"""The ``mapillary`` reader: Mapillary Vistas v1.2 or v2.0, class-index label PNGs mapped to Cityscapes.

Published layout (the Vistas download, unpacked; ``root`` holds both versions' configs)::

    <root>/config_v1.2.json, <root>/config_v2.0.json          # {"labels": [{"name": ...}, ...]}
    <root>/{training,validation}/images/<key>.jpg
    <root>/{training,validation}/v1.2/labels/<key>.png         # 8-bit, pixel = index into config_v1.2 labels
    <root>/{training,validation}/v2.0/labels/<key>.png         # 8-bit, pixel = index into config_v2.0 labels
    <root>/testing/images/<key>.jpg                            # no public labels

``version`` picks ``v1.2`` (66 classes) or ``v2.0`` (124 classes). A label pixel is the index of
its class in the version's config ``labels`` list, so the map to the 19 Cityscapes classes is
built from the class NAMES in that config through :data:`MAPILLARY_TO_CITYSCAPES` (a built-in
copy covering every v1.2 and v2.0 name, listed in the README; names without a Cityscapes
counterpart map to 255). A config name the table does not know is an error naming the file and
the names (give the source a ``label_map`` instead). Index values past the config's list are ids
the map does not cover: an error naming the label file, unless ``unmapped: ignore``.

Vistas publishes no per-image weather or time of day, so every image is in ``domain``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Literal

from proveseg.data.classes import CITYSCAPES19, IGNORE_INDEX
from proveseg.data.labelmap import LabelMap
from proveseg.data.records import SOURCE_DOMAIN
from proveseg.readers.base import ReaderError, ReadResult, SourceBase, SplitPresets, pair_labels, walk_images

__all__ = ["MAPILLARY_TO_CITYSCAPES", "MapillarySource", "mapillary_label_map"]

_R, _S, _B, _W, _F, _P = "road", "sidewalk", "building", "wall", "fence", "pole"
_TL, _TS, _V, _T, _SKY = "traffic light", "traffic sign", "vegetation", "terrain", "sky"

# Vistas class name (v1.2 and v2.0) -> Cityscapes class, or None (255). Follows the Cityscapes label
# definitions: markings, crosswalks, bike and service lanes are road; curbs, curb cuts, traffic
# islands and pedestrian areas are sidewalk; parking, rail track, bridge, tunnel and guard rail are
# void in Cityscapes' train ids; the back of a traffic sign and non-traffic signs are not traffic signs.
MAPILLARY_TO_CITYSCAPES: dict[str, str | None] = {
    "animal--bird": None, "animal--ground-animal": None,
    "construction--barrier--ambiguous": None, "construction--barrier--concrete-block": None,
    "construction--barrier--curb": _S, "construction--barrier--fence": _F,
    "construction--barrier--guard-rail": None, "construction--barrier--other-barrier": None,
    "construction--barrier--road-median": None, "construction--barrier--road-side": None,
    "construction--barrier--separator": None, "construction--barrier--temporary": None,
    "construction--barrier--wall": _W,
    "construction--flat--bike-lane": _R, "construction--flat--crosswalk-plain": _R,
    "construction--flat--curb-cut": _S, "construction--flat--driveway": None, "construction--flat--parking": None,
    "construction--flat--parking-aisle": None, "construction--flat--pedestrian-area": _S,
    "construction--flat--rail-track": None, "construction--flat--road": _R, "construction--flat--road-shoulder": _R,
    "construction--flat--service-lane": _R, "construction--flat--sidewalk": _S,
    "construction--flat--traffic-island": _S,
    "construction--structure--bridge": None, "construction--structure--building": _B,
    "construction--structure--garage": _B, "construction--structure--tunnel": None,
    "human--person": "person", "human--person--individual": "person", "human--person--person-group": "person",
    "human--rider--bicyclist": "rider", "human--rider--motorcyclist": "rider", "human--rider--other-rider": "rider",
    "marking--crosswalk-zebra": _R, "marking--general": _R,
    "marking--continuous--dashed": _R, "marking--continuous--solid": _R, "marking--continuous--zigzag": _R,
    "marking--discrete--ambiguous": _R, "marking--discrete--arrow--left": _R, "marking--discrete--arrow--other": _R,
    "marking--discrete--arrow--right": _R, "marking--discrete--arrow--split-left-or-straight": _R,
    "marking--discrete--arrow--split-right-or-straight": _R, "marking--discrete--arrow--straight": _R,
    "marking--discrete--crosswalk-zebra": _R, "marking--discrete--give-way-row": _R,
    "marking--discrete--give-way-single": _R, "marking--discrete--hatched--chevron": _R,
    "marking--discrete--hatched--diagonal": _R, "marking--discrete--other-marking": _R,
    "marking--discrete--stop-line": _R, "marking--discrete--symbol--bicycle": _R,
    "marking--discrete--symbol--other": _R, "marking--discrete--text": _R,
    "marking-only--continuous--dashed": _R, "marking-only--discrete--crosswalk-zebra": _R,
    "marking-only--discrete--other-marking": _R, "marking-only--discrete--text": _R,
    "nature--mountain": _T, "nature--sand": _T, "nature--sky": _SKY, "nature--snow": None, "nature--terrain": _T,
    "nature--vegetation": _V, "nature--water": None,
    "object--banner": None, "object--bench": None, "object--bike-rack": None, "object--billboard": None,
    "object--catch-basin": None, "object--cctv-camera": None, "object--fire-hydrant": None,
    "object--junction-box": None, "object--mailbox": None, "object--manhole": _R, "object--parking-meter": None,
    "object--phone-booth": None, "object--pothole": _R,
    "object--sign--advertisement": None, "object--sign--ambiguous": None, "object--sign--back": None,
    "object--sign--information": None, "object--sign--other": None, "object--sign--store": None,
    "object--street-light": _P, "object--support--pole": _P, "object--support--pole-group": _P,
    "object--support--traffic-sign-frame": _P, "object--support--utility-pole": _P,
    "object--traffic-cone": None,
    "object--traffic-light": _TL, "object--traffic-light--cyclists": _TL,
    "object--traffic-light--general-horizontal": _TL, "object--traffic-light--general-single": _TL,
    "object--traffic-light--general-upright": _TL, "object--traffic-light--other": _TL,
    "object--traffic-light--pedestrians": _TL,
    "object--traffic-sign--ambiguous": None, "object--traffic-sign--back": None,
    "object--traffic-sign--direction-back": None, "object--traffic-sign--direction-front": _TS,
    "object--traffic-sign--front": _TS, "object--traffic-sign--information-parking": _TS,
    "object--traffic-sign--temporary-back": None, "object--traffic-sign--temporary-front": _TS,
    "object--trash-can": None,
    "object--vehicle--bicycle": "bicycle", "object--vehicle--boat": None, "object--vehicle--bus": "bus",
    "object--vehicle--car": "car", "object--vehicle--caravan": None, "object--vehicle--motorcycle": "motorcycle",
    "object--vehicle--on-rails": "train", "object--vehicle--other-vehicle": None, "object--vehicle--trailer": None,
    "object--vehicle--truck": "truck", "object--vehicle--vehicle-group": None, "object--vehicle--wheeled-slow": None,
    "object--water-valve": None,
    "void--car-mount": None, "void--dynamic": None, "void--ego-vehicle": None, "void--ground": None,
    "void--static": None, "void--unlabeled": None,
}


def mapillary_label_map(config: Path, unmapped: str = "error") -> LabelMap:
    """Label index -> Cityscapes train id for the class names listed in a Vistas ``config_v*.json``."""
    try:
        labels = json.loads(config.read_text(encoding="utf-8"))["labels"]
        names = [str(entry["name"]) for entry in labels]
    except OSError as exc:
        raise ReaderError(f"{config}: cannot read the Vistas config: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ReaderError(f"{config}: not a Vistas config (a 'labels' list of entries with a 'name'): "
                          f"{type(exc).__name__}: {exc}") from None
    if not 0 < len(names) <= IGNORE_INDEX:
        raise ReaderError(f"{config}: {len(names)} labels; expected 1..{IGNORE_INDEX}")
    unknown = [n for n in names if n not in MAPILLARY_TO_CITYSCAPES]
    if unknown:
        raise ReaderError(f"{config}: class names {unknown[:8]} are not in the built-in Vistas -> Cityscapes "
                          "table; give the source a label_map (label index -> class id)")
    pairs = {i: IGNORE_INDEX if (target := MAPILLARY_TO_CITYSCAPES[n]) is None else CITYSCAPES19.index(target)
             for i, n in enumerate(names)}
    return LabelMap.from_pairs(pairs, f"{config} names -> cityscapes (built in)", unmapped)


class MapillarySource(SourceBase):
    """Mapillary Vistas: ``<split>/images/*.jpg`` with ``<split>/v<version>/labels/*.png``."""

    reader: Literal["mapillary"] = "mapillary"
    split: str = "training"
    version: Literal["1.2", "2.0"] = "1.2"
    domain: str = SOURCE_DOMAIN  # Vistas has no per-image condition labels: every image is in this domain

    DEFAULT_SPLITS: ClassVar[SplitPresets | None] = {
        "train": {"split": "training"},
        "val": None,  # the published val split is the test split: give a val of your own (e.g. a take of train)
        "test": {"split": "validation"}}

    def read(self) -> ReadResult:
        """Every image of ``split`` paired with its ``v<version>`` class-index label."""
        image_root = self.root / self.split / "images"
        label_root = self.root / self.split / f"v{self.version}" / "labels"
        pairs = [(img, (label_root / img.relative_to(image_root)).with_suffix(".png"), self.domain)
                 for img in walk_images(image_root)]
        self.builtin_label_map()  # a missing or unknown config fails here, before any training
        return pair_labels(self.name, pairs, self.on_invalid)

    def builtin_label_map(self) -> LabelMap | None:
        """The config's class names -> Cityscapes train ids (:data:`MAPILLARY_TO_CITYSCAPES`)."""
        if self.label_map is not None:  # the user's table replaces ours; the config is not needed
            return None
        return mapillary_label_map(self.root / f"config_v{self.version}.json", self.unmapped)
