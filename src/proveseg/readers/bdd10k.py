"""The ``bdd10k`` reader: BDD100K's 10K semantic-segmentation images and their ``sem_seg`` masks.

Published layout (BDD100K "10K Images" and "Semantic Segmentation" downloads, unpacked into one
``bdd100k`` folder, which is ``root``)::

    bdd100k/images/10k/{train,val,test}/<name>.jpg
    bdd100k/labels/sem_seg/masks/{train,val}/<name>.png      # train ids 0..18, 255 = unknown
    bdd100k/labels/det_20/det_{train,val}.json               # optional: per-image attributes

The masks already hold the 19 Cityscapes train ids (BDD100K evaluates the same 19 classes, 255 =
"unknown"), so no label map is needed. ``test`` has no public masks.

Domains: without ``attributes`` every image is in ``domain``. With ``attributes`` (a BDD100K
label JSON in Scalabel format: a list of frames ``{"name": ..., "attributes": {"weather": ...,
"timeofday": ..., "scene": ...}}``, e.g. ``labels/det_20/det_train.json``; relative paths are
under ``root``; ``{split}`` in it is replaced by the split, so one preset serves train and val:
``labels/det_20/det_{split}.json``), each image's domain comes from the first of ``domain_rules`` that matches its
attributes (:data:`BDD_DOMAIN_RULES` by default, listed in the README). The 10K images are not a
subset of the 100K ones, so some may be missing from the attributes file: ``missing_attributes``
says what then happens — ``error`` (default, naming how many and an example), ``skip`` (counted
under ``no_attributes``), or ``keep`` (they go to domain ``unknown_domain``, visible in every
domain count). An image no rule matches is an error naming it and its attributes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from proveseg.data.records import SOURCE_DOMAIN
from proveseg.readers.base import ReaderError, ReadResult, SourceBase, SplitPresets, pair_labels, walk_images

__all__ = ["BDD_DOMAIN_RULES", "Bdd10kSource", "DomainRule"]


class DomainRule(BaseModel):
    """Images whose attributes equal every given one (weather, timeofday, scene) go to ``domain``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weather: str | None = None  # rainy | snowy | clear | overcast | partly cloudy | foggy | undefined
    timeofday: str | None = None  # daytime | night | dawn/dusk | undefined
    scene: str | None = None  # city street | highway | residential | tunnel | parking lot | gas stations | undefined
    domain: str

    def matches(self, attributes: dict[str, str]) -> bool:
        """True when every attribute this rule names has that value."""
        return all(attributes.get(key) == value for key, value in
                   (("weather", self.weather), ("timeofday", self.timeofday), ("scene", self.scene))
                   if value is not None)


# First match wins: the weather first (an adverse condition dominates), then the light, then the sky.
BDD_DOMAIN_RULES: tuple[DomainRule, ...] = (
    DomainRule(weather="foggy", domain="fog"),
    DomainRule(weather="snowy", domain="snowy"),
    DomainRule(weather="rainy", domain="rainy"),
    DomainRule(timeofday="night", domain="night"),
    DomainRule(timeofday="dawn/dusk", domain="dawn_dusk"),
    DomainRule(weather="overcast", timeofday="daytime", domain="cloudy"),
    DomainRule(weather="partly cloudy", timeofday="daytime", domain="cloudy"),
    DomainRule(weather="clear", timeofday="daytime", domain="clear_day"),
    DomainRule(domain="other"),  # undefined weather or time of day
)


class Bdd10kSource(SourceBase):
    """BDD100K 10K: ``images/10k/<split>`` with ``labels/sem_seg/masks/<split>`` train-id masks."""

    reader: Literal["bdd10k"] = "bdd10k"
    split: str = "train"
    domain: str = SOURCE_DOMAIN  # every image's domain when no attributes file is given
    attributes: Path | None = None  # BDD100K label JSON with per-image attributes (relative: under root; {split})
    domain_rules: tuple[DomainRule, ...] = BDD_DOMAIN_RULES  # first match wins
    missing_attributes: Literal["error", "skip", "keep"] = "error"  # an image the attributes file does not list
    unknown_domain: str = "unknown"  # the domain of such images under missing_attributes: keep

    DEFAULT_SPLITS: ClassVar[SplitPresets | None] = {
        "train": {"split": "train"},
        "val": None,  # the published val split is the test split: give a val of your own (e.g. a take of train)
        "test": {"split": "val"}}

    def read(self) -> ReadResult:
        """Every image of ``split`` paired with its ``sem_seg`` mask, in the domain its attributes give."""
        image_root = self.root / "images" / "10k" / self.split
        mask_root = self.root / "labels" / "sem_seg" / "masks" / self.split
        images = walk_images(image_root)
        attributes = self._attributes() if self.attributes is not None else None
        pairs, missing = [], []
        for img in images:
            label = (mask_root / img.relative_to(image_root)).with_suffix(".png")
            if attributes is None:
                pairs.append((img, label, self.domain))
            elif img.name in attributes:
                pairs.append((img, label, self._domain_of(img, attributes[img.name])))
            elif self.missing_attributes == "keep":
                pairs.append((img, label, self.unknown_domain))
            else:
                missing.append(img)
        if missing and self.missing_attributes == "error":
            raise ReaderError(f"dataset {self.name!r}: {len(missing)} of {len(images)} image(s) are not in the "
                              f"attributes file {self._attributes_path()}, e.g. {missing[0].name}; set "
                              "missing_attributes: skip (counted) or keep (domain "
                              f"{self.unknown_domain!r})")
        result = pair_labels(self.name, pairs, self.on_invalid)
        for img in missing:
            result.skip("no_attributes", str(img))
        return result

    def _attributes_path(self) -> Path:
        assert self.attributes is not None
        path = Path(str(self.attributes).replace("{split}", self.split))
        return path if path.is_absolute() else self.root / path

    def _attributes(self) -> dict[str, dict[str, str]]:
        """Image file name -> its frame attributes, from a Scalabel-format BDD100K label JSON."""
        path = self._attributes_path()
        try:
            frames = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ReaderError(f"{path}: cannot read the attributes file: {exc.strerror or exc}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ReaderError(f"{path}: not a JSON file: {exc}") from None
        if isinstance(frames, dict) and isinstance(frames.get("frames"), list):  # a Scalabel dataset object
            frames = frames["frames"]
        if not isinstance(frames, list):
            raise ReaderError(f"{path}: expected a list of frames with name and attributes (BDD100K label JSON)")
        out: dict[str, dict[str, str]] = {}
        for i, frame in enumerate(frames):
            if not isinstance(frame, dict) or not isinstance(frame.get("name"), str):
                raise ReaderError(f"{path}: frame {i}: field 'name' is missing or not a string")
            attrs = frame.get("attributes")
            if not isinstance(attrs, dict):
                raise ReaderError(f"{path}: frame {i} ({frame['name']}): field 'attributes' is missing")
            out[frame["name"]] = {k: str(v) for k, v in attrs.items()}
        return out

    def _domain_of(self, image: Path, attributes: dict[str, str]) -> str:
        for rule in self.domain_rules:
            if rule.matches(attributes):
                return rule.domain
        raise ReaderError(f"{image}: attributes {attributes} match none of domain_rules; add a rule, or a last "
                          "catch-all rule {domain: other}")
