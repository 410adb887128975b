"""The header pass over a reader source's records, before any training: every file, not a sample.

A manifest's rows are checked file by file when it is validated (:mod:`proveseg.data.manifest`);
reader sources (``data.real``, ``data.unlabeled``, ``evaluation.val`` / ``evaluation.test``) get the
same checks here, with the same byte-level header parser (:mod:`proveseg.data.imageheader`, in a
thread pool) and the same rule per record: the image exists, is non-empty, has a readable and
complete header; a labeled record's label does too, is stored losslessly, has the image's size and
the image's EXIF orientation (the loader would rotate the image but not its label). The reasons are
the manifest's (:data:`proveseg.data.manifest.REASONS`).

Label *values* are not read here (that decodes every label): :func:`proveseg.data.pipeline.preflight_labels`
decodes a sample of each source before training, and the loader checks every label it decodes.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from proveseg.data.imageheader import ImageHeader
from proveseg.data.manifest import _compare as _manifest_rule
from proveseg.data.paircheck import read_headers
from proveseg.data.records import RecordTable

__all__ = ["FILE_SAMPLE", "FileCheck", "RecordFileError", "check_record_files", "file_fingerprint",
           "refuse_unusable_files"]

_MISSING = os.strerror(errno.ENOENT)  # what read_headers reports for a file that is not there
_SHOWN = 3  # problems quoted in an error message


class RecordFileError(ValueError):
    """Records whose files cannot be trained or evaluated on; the message names the source, each file and reason."""


@dataclass
class FileCheck:
    """The outcome of a header pass: the usable records, and each bad record's (index, reason, detail)."""

    records: RecordTable
    problems: list[tuple[int, str, str]] = field(default_factory=list)

    def by_reason(self) -> dict[str, int]:
        """Bad records per reason."""
        out: dict[str, int] = {}
        for _, reason, _ in self.problems:
            out[reason] = out.get(reason, 0) + 1
        return dict(sorted(out.items()))

    def message(self, what: str) -> str:
        """One line naming ``what`` (the source), the count by reason and the first few bad files."""
        summary = ", ".join(f"{n} {r}" for r, n in self.by_reason().items())
        first = "; ".join(f"{reason}: {detail}" for _, reason, detail in self.problems[:_SHOWN])
        more = f" (and {len(self.problems) - _SHOWN} more)" if len(self.problems) > _SHOWN else ""
        return f"{what}: {len(self.problems)} record(s) with unusable files [{summary}]; {first}{more}"


def _problem(image: ImageHeader | str, label: ImageHeader | str | None,
             paths: tuple[str, str]) -> tuple[str, str] | None:
    """The first problem of one record's headers, naming the file; None when there is none."""
    if label is None:  # no label: the image alone
        if isinstance(image, str) or not image.complete:
            return _unreadable(image, paths[0], "image")
        return None
    for header, path, what in ((image, paths[0], "image"), (label, paths[1], "label")):
        if isinstance(header, str) and header == _MISSING:
            return f"missing_{what}", f"{path}: {header}"
    # the manifest's rule; a reader source has no original, so the label stands in for it (already checked)
    return _manifest_rule(image, label, label, (paths[0], paths[1], paths[1]))


def _unreadable(header: ImageHeader | str, path: str, what: str) -> tuple[str, str]:
    if isinstance(header, str):
        return ("missing_" if header == _MISSING else "unreadable_") + what, f"{path}: {header}"
    return f"truncated_{what}", f"{path}: end marker missing"


def check_record_files(records: RecordTable, labeled: bool = True, threads: int = 4) -> FileCheck:
    """Read the header of every image (and, when ``labeled``, every label) of ``records``.

    Returns the records whose files pass, in their order, and the problems of the others (the
    caller raises or counts them: see :func:`proveseg.data.pipeline.check_source_files`). A row with
    an empty label is checked as unlabeled.
    """
    images = records.image.tolist()
    labels = records.label.tolist() if labeled else [""] * len(images)
    image_heads = read_headers(images, threads)
    with_label = [i for i, lab in enumerate(labels) if lab]
    label_heads: list[ImageHeader | str | None] = [None] * len(images)
    for i, head in zip(with_label, read_headers([labels[i] for i in with_label], threads), strict=True):
        label_heads[i] = head
    problems = []
    for i, (image, label) in enumerate(zip(image_heads, label_heads, strict=True)):
        found = _problem(image, label, (images[i], labels[i]))
        if found is not None:
            problems.append((i, *found))
    if not problems:
        return FileCheck(records)
    keep = np.ones(len(records), bool)
    keep[[i for i, _, _ in problems]] = False
    return FileCheck(records.take(keep), problems)


def refuse_unusable_files(records: RecordTable, what: str) -> None:
    """Raise RecordFileError naming ``what`` (``evaluation.test``), the sources and the first bad files, if any
    record of ``records`` (labeled where it has a label) fails the header pass.

    Evaluation splits are never thinned, whatever a source's ``on_invalid``: every run of a study
    must be scored on the same images, and the audit re-reads the split to check that it was.
    """
    check = check_record_files(records)
    if check.problems:
        sources = sorted({str(records.source[i]) for i, _, _ in check.problems})
        raise RecordFileError(check.message(f"{what} (source {', '.join(map(repr, sources))})") +
                              "; evaluation sources are never thinned (on_invalid does not apply): fix or remove "
                              "these files")


FILE_SAMPLE = 1024  # records per source whose file sizes are fingerprinted


def file_fingerprint(records: RecordTable, sample: int = FILE_SAMPLE) -> str:
    """SHA-256 over the paths and byte sizes of the files of ``sample`` records spread evenly over ``records``.

    The record hash covers paths, not contents: images regenerated in place (a generator re-run into the same
    folder) keep every path. Their sizes change (compressed images of new content almost never keep their
    size), so a resume refuses and the audit calls the run stale. A sample, not every file: one ``stat`` per
    file of ``sample`` records per source, whatever its size; one edited file among many may be missed.
    A missing file counts as size -1.
    """
    n = len(records)
    rows = np.unique(np.linspace(0, n - 1, min(sample, n)).round().astype(np.int64)) if n else np.zeros(0, np.int64)
    columns = [c for c in ("image", "label", "image2", "label2") if getattr(records, c, None) is not None]
    digest = hashlib.sha256()
    for i in rows.tolist():
        for column in columns:
            path = str(getattr(records, column)[i])
            if path:
                try:
                    size = os.stat(path).st_size
                except OSError:
                    size = -1
                digest.update(f"{path}\x1f{size}\x1e".encode())
    return digest.hexdigest()
