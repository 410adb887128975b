"""The ``cityscapes`` reader: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with ``gtFine`` labels."""

from __future__ import annotations

from typing import ClassVar, Literal

from proveseg.data.records import SOURCE_DOMAIN
from proveseg.readers.base import ReadResult, SourceBase, SplitPresets, pair_labels, walk_images

__all__ = ["CityscapesSource"]


class CityscapesSource(SourceBase):
    """Cityscapes: train-id labels (``*_gtFine_labelTrainIds.png``) if present, else label ids."""

    reader: Literal["cityscapes"] = "cityscapes"
    split: str = "train"
    domain: str = SOURCE_DOMAIN  # every Cityscapes image is in this domain

    DEFAULT_SPLITS: ClassVar[SplitPresets | None] = {
        "train": {"split": "train"},
        "val": None,  # the published val split is the test split (test labels are not public)
        "test": {"split": "val"}}

    def read(self) -> ReadResult:
        """Every image of ``split`` paired with its ``gtFine`` label."""
        root = self.root
        pairs = []
        for img in walk_images(root / "leftImg8bit" / self.split):
            stem = img.name.removesuffix("_leftImg8bit.png")
            folder = root / "gtFine" / img.relative_to(root / "leftImg8bit").parent
            train_ids = folder / f"{stem}_gtFine_labelTrainIds.png"
            label = train_ids if train_ids.exists() else folder / f"{stem}_gtFine_labelIds.png"
            pairs.append((img, label, self.domain))
        return pair_labels(self.name, pairs, self.on_invalid)
