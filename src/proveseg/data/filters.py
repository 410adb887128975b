"""Filter lists of a config (a source's ``domains``, a generator's ``datasets`` / ``target_domains``): every entry
must match something, so a typo (``fgo``) in a list that matches otherwise is refused instead of silently keeping
less data than the config says."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

__all__ = ["FilterError", "check_filter"]


class FilterError(ValueError):
    """A filter entry that matches nothing; the message names the source, the field and the entry."""


def check_filter(source: str, field: str, wanted: Sequence[str] | None, present: Iterable[object]) -> None:
    """Raise :class:`FilterError` naming each entry of ``wanted`` that is not among ``present`` (the values of the
    filtered column before filtering), with the values present and the closest one for each."""
    if wanted is None:
        return
    values = sorted({str(v) for v in present})
    missing = [w for w in wanted if w not in set(values)]
    if not missing:
        return
    hints = []
    for entry in missing:
        close = difflib.get_close_matches(entry, values, n=1)
        hints.append(f"{entry!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    shown = ", ".join(values[:20]) + (f", ... ({len(values)} in all)" if len(values) > 20 else "")
    raise FilterError(f"{source}: {field} entr{'y' if len(missing) == 1 else 'ies'} {', '.join(hints)} match(es) "
                      f"nothing; present: {shown or 'none'}")
