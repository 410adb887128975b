"""Filter lists: every entry must match something (a typo beside a valid entry is refused, not ignored)."""

from __future__ import annotations

import pytest

from proveseg.data.filters import FilterError, check_filter


def test_every_filter_entry_must_match_naming_field_entry_and_close_value() -> None:
    check_filter("a", "domains", None, ["fog"])
    check_filter("a", "domains", ["clear_day", "fog"], ["fog", "clear_day", "fog"])
    with pytest.raises(FilterError, match=r"^a: domains entry 'fgo' \(did you mean 'fog'\?\) match\(es\) nothing; "
                                          r"present: clear_day, fog$"):
        check_filter("a", "domains", ["clear_day", "fgo"], ["clear_day", "fog"])
    with pytest.raises(FilterError, match=r"target_domains entries 'rian' \(did you mean 'rain'\?\), 'zzz' match"):
        check_filter("faithful", "target_domains", ["fog", "rian", "zzz"], ["fog", "rain"])
