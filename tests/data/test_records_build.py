"""Arrow -> numpy string columns without per-row Python strings must give the same strings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from proveseg.data.manifest import _numpy_strings
from proveseg.data.records import RecordTable


def _slow(column: pa.Array) -> list[str]:
    return column.to_numpy(zero_copy_only=False).astype(np.dtypes.StringDType()).tolist()


def test_ascii_non_ascii_nul_and_sliced_columns_match_the_per_row_route() -> None:
    cases = [
        pa.array(["a/b.jpg", "", "x" * 40, "short", "a/../c d.png"]),
        pa.array(["café/ü.jpg", "plain"]),  # non-ASCII: code-point padding would be wrong, takes the slow route
        pa.array(["ends in nul\x00", "ok"]),  # fixed-width bytes would drop the NUL
        pa.array(["mid\x00dle", "ok"]),
        pa.array(["", ""]),
        pa.array([], pa.string()),
        pa.array(["a", "bb", "ccc", "dddd"], pa.large_string()),
        pa.array(["zero", "one", "two", "three", "four"]).slice(2, 2),  # non-zero offset into the buffers
    ]
    for column in cases:
        out = _numpy_strings(column)
        assert isinstance(out.dtype, np.dtypes.StringDType)
        assert out.tolist() == _slow(column), column


def test_from_columns_keeps_string_arrays_and_broadcasts_constants() -> None:
    image = np.array(["b.jpg", "a.jpg"], dtype=np.dtypes.StringDType())
    table = RecordTable.from_columns({"image": image, "dataset": "d", "domain": ["x", "y"], "kind": "real",
                                      "source": "s"})
    assert table.image.tolist() == ["b.jpg", "a.jpg"]
    assert table.dataset.tolist() == ["d", "d"] and table.kind.tolist() == ["real", "real"]
    assert table.label.tolist() == ["", ""] and table.domain.tolist() == ["x", "y"]


def test_row_order_equals_arrows_three_key_stable_sort() -> None:
    import pyarrow.compute as pc

    from proveseg.data.manifest import _sorted_order

    rng = np.random.default_rng(3)
    n = 5000
    dataset = pa.array(rng.choice(["acdc", "bdd10k", "Cityscapes", "idd-aw", "é-set"], n).tolist())
    domain = pa.array(rng.choice(["fog", "night", "rainy", "snowy", "Fog"], n).tolist())
    image = pa.array([f"g/{v}.jpg" for v in rng.integers(0, 400, n)])  # many ties: stability shows
    expected = pc.sort_indices(pa.table({"d": dataset, "m": domain, "i": image}),
                               sort_keys=[("d", "ascending"), ("m", "ascending"), ("i", "ascending")])
    assert np.array_equal(_sorted_order(dataset, domain, image).to_numpy(), expected.to_numpy())
