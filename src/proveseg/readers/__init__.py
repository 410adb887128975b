"""Readers: a dataset on disk -> a sorted :class:`~proveseg.data.records.RecordTable` of (image, label, domain).

Each reader is one module here holding its schema: a :class:`SourceBase` subclass that fixes
``reader`` to its name (``Literal["folder"]``), declares only the options that reader takes, and
implements ``read()``. :data:`READERS` below is the registry, and :data:`SourceConfig` (what
``data.real``, ``data.unlabeled``, ``evaluation.val`` / ``evaluation.test`` and study splits hold)
is the union of the registered schemas, picked by the ``reader:`` key (absent: ``folder``). An
option of another reader (``split`` on a folder source) is an unknown field, and an unknown
reader is an error listing the valid ones.

Adding a reader = one new module defining its schema + one line in :data:`READERS`.

:func:`read_source` is the one way to read a configured source: the reader, then the source's
``domains`` filter and ``take`` slice, with skipped entries counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias, Union

import numpy as np
from pydantic import BeforeValidator, Discriminator, Tag, TypeAdapter
from pydantic_core import PydanticCustomError

from proveseg.data.filters import check_filter
from proveseg.readers.acdc import ACDC_DOMAINS, AcdcSource
from proveseg.readers.base import IMAGE_EXTENSIONS, ReaderError, ReadResult, SourceBase
from proveseg.readers.bdd10k import Bdd10kSource
from proveseg.readers.cityscapes import CityscapesSource
from proveseg.readers.csvlist import CsvSource
from proveseg.readers.folder import FolderSource
from proveseg.readers.iddaw import IddAwSource
from proveseg.readers.mapillary import MapillarySource

__all__ = [
    "ACDC_DOMAINS",
    "DEFAULT_READER",
    "IMAGE_EXTENSIONS",
    "READERS",
    "AcdcSource",
    "Bdd10kSource",
    "CityscapesSource",
    "CsvSource",
    "FolderSource",
    "IddAwSource",
    "MapillarySource",
    "ReadResult",
    "ReaderError",
    "SourceBase",
    "SourceConfig",
    "read_dataset",
    "read_source",
    "validate_source",
]

READERS: dict[str, type[SourceBase]] = {
    "folder": FolderSource,
    "cityscapes": CityscapesSource,
    "acdc": AcdcSource,
    "csv": CsvSource,
    "bdd10k": Bdd10kSource,
    "idd_aw": IddAwSource,
    "mapillary": MapillarySource,
}
DEFAULT_READER = "folder"  # the reader of a source without ``reader:``

_TAKE_SALT = 0x7A4E  # mixed into ``take_seed`` so ``take`` draws its own stream

# proveseg 0.1.0 wrote every reader's options into each source of a run.yaml or checkpoint; such a
# dump holds all of these keys (nobody writes them all by hand), and its reader ignored the foreign ones.
_OLD_DUMP_KEYS = frozenset({"split", "images", "labels", "label_suffix", "label_ext", "domain", "domain_level"})


def _from_old_dump(value: Mapping[str, Any], schemas: Mapping[str, type[SourceBase]]) -> Mapping[str, Any]:
    """A source as written before each reader had its own schema, reduced to its reader's options."""
    reader = value.get("reader", DEFAULT_READER)
    if not value.keys() >= _OLD_DUMP_KEYS or reader not in schemas:
        return value
    fields = schemas[reader].model_fields
    # an old cityscapes source's ``domain: null`` meant the default domain
    return {k: v for k, v in value.items()
            if k in fields and not (k == "domain" and v is None and reader == "cityscapes")}


def _source_union(schemas: Mapping[str, type[SourceBase]]) -> Any:
    """A pydantic type that validates a mapping as the schema its ``reader`` key names.

    ``schemas`` maps reader names to schemas (:data:`READERS`). A mapping without ``reader`` is a
    ``folder`` source; an unknown reader fails with a message listing the valid ones.
    """
    valid = ", ".join(schemas)

    def reader_of(value: Any) -> str | None:
        reader = value.get("reader", DEFAULT_READER) if isinstance(value, Mapping) else getattr(value, "reader", None)
        return reader if isinstance(reader, str) and reader in schemas else None

    def known_reader(value: Any) -> Any:
        if isinstance(value, Mapping):
            value = _from_old_dump(value, schemas)
        if isinstance(value, Mapping) and reader_of(value) is None:
            raise PydanticCustomError("unknown_reader", "unknown reader {reader}; valid: {valid}",
                                      {"reader": repr(value.get("reader")), "valid": valid})
        return value

    for reader, schema in schemas.items():
        if schema.model_fields["reader"].default != reader:
            raise TypeError(f"reader {reader!r}: {schema.__name__}.reader defaults to "
                            f"{schema.model_fields['reader'].default!r}, not {reader!r}")
    members = tuple(Annotated[schema, Tag(reader)] for reader, schema in schemas.items())
    not_a_source = "expected a source: a mapping of its fields (root, reader, ...)"
    # Union[...]: the members are a runtime tuple, which ``X | Y`` cannot spell
    return Annotated[Union[members],  # noqa: UP007
                     Discriminator(reader_of, custom_error_type="not_a_source", custom_error_message=not_a_source),
                     BeforeValidator(known_reader)]


if TYPE_CHECKING:  # the union is built from the registry; type checkers see the common base
    SourceConfig: TypeAlias = SourceBase
else:
    SourceConfig = _source_union(READERS)

_SOURCE_ADAPTER: TypeAdapter[SourceConfig] = TypeAdapter(SourceConfig)


def validate_source(data: Mapping[str, Any]) -> SourceConfig:
    """A mapping (a config entry) validated as the source schema its ``reader`` names."""
    return _SOURCE_ADAPTER.validate_python(data)


def read_source(src: SourceConfig, labeled: bool = False) -> ReadResult:
    """Read ``src``: its reader, then its ``domains`` filter and ``take`` slice; skips stay counted.

    The records carry the source's label map (its ``label_map``, else the reader's own table), which
    the dataset applies when it decodes a label. ``labeled``: the source is used where labels are
    needed (a real source), so records without labels are a :class:`ReaderError` saying why.
    """
    result = src.read()
    if labeled and np.any(result.records.kind == "unlabeled"):
        raise ReaderError(f"source {src.name!r} is a labeled source but has no labels: {src.unlabeled_reason()} "
                          "(list it under unlabeled, or give its labels)")
    table = result.records
    if src.domains is not None:
        check_filter(f"source {src.name!r}", "domains", src.domains, np.unique(table.domain))
        table = table.take(np.isin(table.domain, src.domains))
    if src.take is not None:
        order = np.random.default_rng([src.take_seed, _TAKE_SALT]).permutation(len(table))
        lo, hi = (round(f * len(table)) for f in src.take)
        table = table.take(np.sort(order[lo:hi]))
    result.records = table.with_label_map(src.name, src.effective_label_map())
    return result


def read_dataset(reader: str, root: str | Path, name: str, on_invalid: str = "error", **options: object) -> ReadResult:
    """Read a dataset given as arguments (``options`` are the reader's schema fields) via :func:`read_source`.

    An unknown ``reader`` raises KeyError listing the valid ones; an option the reader does not
    take raises pydantic's ValidationError naming it.
    """
    if reader not in READERS:
        raise KeyError(f"unknown reader {reader!r}; valid: {', '.join(READERS)}")
    schema = READERS[reader]
    src = schema.model_validate({"name": name, "reader": reader, "root": root, "on_invalid": on_invalid, **options})
    return read_source(src)
