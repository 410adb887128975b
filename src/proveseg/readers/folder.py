"""The ``folder`` reader: ``root/images/<...>/x.jpg`` with ``root/labels/<...>/x<suffix>.png``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from proveseg.readers.base import ReaderError, ReadResult, SourceBase, pair_labels, walk_images

__all__ = ["FolderSource"]


class FolderSource(SourceBase):
    """Images and labels in two parallel folder trees.

    The domain is ``domain`` if given, else the path component ``domain_level`` below ``images/``
    (the synthetic benchmark: ``train/images/<domain>/scene.jpg``).
    """

    reader: Literal["folder"] = "folder"
    images: str = "images"
    labels: str = "labels"
    label_suffix: str = ""
    label_ext: str = ".png"
    domain: str | None = None  # fixed domain instead of a path component
    domain_level: int = Field(0, ge=0)  # path component below images/ naming the domain

    def read(self) -> ReadResult:
        """Every image under ``root/images`` paired with its label under ``root/labels``."""
        image_root, label_root = self.root / self.images, self.root / self.labels
        pairs = []
        for img in walk_images(image_root):
            rel = img.relative_to(image_root)
            if self.domain is None and len(rel.parts) <= self.domain_level + 1:
                raise ReaderError(f"{img}: no folder at level {self.domain_level} under {image_root} "
                                  "to take the domain from")
            dom = self.domain if self.domain is not None else rel.parts[self.domain_level]
            pairs.append((img, (label_root / rel).with_name(rel.stem + self.label_suffix + self.label_ext), dom))
        return pair_labels(self.name, pairs, self.on_invalid)
