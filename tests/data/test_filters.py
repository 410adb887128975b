"""Filter lists: every entry must match something (a typo beside a valid entry is refused, not ignored)."""

from __future__ import annotations

from pathlib import Path

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


def test_sources_and_manifests_refuse_a_typo_beside_a_valid_entry(tiny_benchmark: Path) -> None:
    from proveseg.data.manifest import validate_manifest
    from proveseg.readers import read_dataset

    root = tiny_benchmark
    domains = sorted(set(read_dataset("folder", root / "train", "train").records.domain.tolist()))
    assert len(read_dataset("folder", root / "train", "train", domains=domains[:1]).records) > 0
    with pytest.raises(FilterError, match=r"source 'train': domains entry 'fgo'"):
        read_dataset("folder", root / "train", "train", domains=[domains[0], "fgo"])
    manifest = root / "generated/faithful/manifest.csv"
    with pytest.raises(FilterError, match=r"target_domain filter entry 'rian'"):
        validate_manifest(manifest, target_domains=["fog", "rian"])
    with pytest.raises(FilterError, match=r"dataset filter entry 'synthtic' \(did you mean 'synthetic'\?\)"):
        validate_manifest(manifest, datasets=["synthetic", "synthtic"])
