"""The ``acdc`` reader: ``rgb_anon/<condition>/<split>/<seq>/*_rgb_anon.png`` with ``gt/...`` labels."""

from __future__ import annotations

from typing import ClassVar, Literal

from proveseg.readers.base import ReaderError, ReadResult, SourceBase, SplitPresets, pair_labels, walk_images

__all__ = ["ACDC_DOMAINS", "AcdcSource"]

ACDC_DOMAINS = {"fog": "fog", "night": "night", "rain": "rainy", "snow": "snowy", "ref": "clear_day"}


class AcdcSource(SourceBase):
    """ACDC: the domain is the condition folder (``rain`` -> ``rainy``, ``ref`` -> ``clear_day``, ...)."""

    reader: Literal["acdc"] = "acdc"
    split: str = "train"

    DEFAULT_SPLITS: ClassVar[SplitPresets | None] = {
        "train": {"split": "train"},
        "val": None,  # the published val split is the test split (test labels are not public)
        "test": {"split": "val"}}

    def read(self) -> ReadResult:
        """Every image of ``split`` under every condition, paired with its ``gt`` label."""
        root = self.root
        pairs = []
        image_root = root / "rgb_anon"
        if not image_root.is_dir():
            raise ReaderError(f"{image_root}: ACDC image folder not found")
        for condition in sorted(p.name for p in image_root.iterdir() if p.is_dir()):
            folder = image_root / condition / self.split
            if not folder.is_dir():
                continue
            for img in walk_images(folder):
                stem = img.name.removesuffix("_rgb_anon.png")
                gt = root / "gt" / img.relative_to(image_root).parent
                train_ids = gt / f"{stem}_gt_labelTrainIds.png"
                label = train_ids if train_ids.exists() else gt / f"{stem}_gt_labelIds.png"
                pairs.append((img, label, ACDC_DOMAINS.get(condition, condition)))
        return pair_labels(self.name, pairs, self.on_invalid)
