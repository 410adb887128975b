"""Case 13: hypothesis-generated manifests and configs fail only with the project's own errors."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proveseg.config import ConfigError, RunConfig, parse_yaml_model
from proveseg.data.manifest import MANIFEST_COLUMNS, ManifestError, validate_manifest
from proveseg.study.spec import StudyConfig

paths = st.one_of(st.sampled_from(["", ".", "..", "../x.jpg", "/etc/passwd", "a/b.png", "x" * 300 + ".jpg",
                                   "../../../../etc/passwd", "img.jpg", " spaced .jpg"]),
                  st.text(min_size=0, max_size=40))
rows = st.lists(st.fixed_dictionaries({c: paths for c in MANIFEST_COLUMNS}), max_size=6)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows, drop=st.sampled_from([None, *MANIFEST_COLUMNS]), raw=st.binary(max_size=60))
def test_fuzzed_manifests_raise_only_manifest_errors(tmp_path: Path, rows: list[dict[str, str]],
                                                    drop: str | None, raw: bytes) -> None:
    columns = [c for c in MANIFEST_COLUMNS if c != drop]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    path = tmp_path / "manifest.csv"
    path.write_bytes(buf.getvalue().encode("utf-8", "surrogatepass") + raw)
    try:
        report = validate_manifest(path)
    except ManifestError:
        return
    assert report.n_invalid + len(report.records) == sum(r.rows for r in report.datasets.values())


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False),
                                     st.text(max_size=12)),
                           lambda children: st.one_of(st.lists(children, max_size=3),
                                                      st.dictionaries(st.text(max_size=10), children, max_size=3)),
                           max_leaves=12)
keys = st.sampled_from(["name", "data", "train", "model", "evaluation", "real", "batch_size", "real_gen_ratio",
                        "strategies", "datasets", "stages", "ratios", "generators", "output_dir"])


@settings(max_examples=150, deadline=None)
@given(doc=st.dictionaries(keys, json_values, max_size=6))
def test_fuzzed_configs_raise_only_config_errors(doc: dict) -> None:
    text = yaml.safe_dump(doc)
    for model in (RunConfig, StudyConfig):
        with contextlib.suppress(ConfigError):
            parse_yaml_model(text, "<fuzz>", model)
