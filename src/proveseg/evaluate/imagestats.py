"""Model-free statistics of generated images against their originals (``proveseg stats``).

Per generator and target domain: mean and std RGB of generated vs original images, the mean
absolute pixel difference, and a layout score: the share of the generated image's strong edges
(top 10% gradient magnitude) that lie on a label boundary of the original (1-pixel band), divided
by the same share for the original image. 1.0 means the generated image keeps the layout as well as
the original; a warped image falls far below.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from proveseg.data.decode import decode_image, decode_label
from proveseg.data.labelmap import LabelMap
from proveseg.data.records import RecordTable

__all__ = ["boundary_band", "edge_alignment", "generator_stats"]


def boundary_band(label: np.ndarray) -> np.ndarray:
    """Pixels within one pixel of a change of label (ignore counts as a label)."""
    edge = np.zeros(label.shape, bool)
    dx = label[:, 1:] != label[:, :-1]
    dy = label[1:, :] != label[:-1, :]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    return edge


def edge_alignment(image: np.ndarray, band: np.ndarray, quantile: float = 0.9) -> float:
    """Share of strong edges of ``image`` that fall inside the boundary ``band``."""
    luma = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    mag = np.zeros_like(luma)
    mag[:, 1:] += np.abs(np.diff(luma, axis=1))
    mag[1:, :] += np.abs(np.diff(luma, axis=0))
    strong = mag > np.quantile(mag, quantile)
    return float((strong & band).sum() / max(int(strong.sum()), 1))


_Result = tuple[np.ndarray, np.ndarray, float, float, float]


def _per_original(task: tuple[str, str, LabelMap | None, list[str]]) -> list[_Result]:
    """Statistics of each generated image made from one original, which is decoded once for all.

    The boundary band is drawn on class ids: through the source's label map when it has one, so
    that raw ids merged into one class (or into ignore) draw no boundary the model is asked for.
    """
    orig_path, label_path, label_map, generated = task
    orig = decode_image(orig_path).astype(np.float32)
    band = boundary_band(decode_label(label_path, None, label_map=label_map))
    orig_mean, orig_std, orig_align = orig.mean(axis=(0, 1)), orig.std(), edge_alignment(orig, band)
    out = []
    for gen_path in generated:
        gen = decode_image(gen_path).astype(np.float32)
        if gen.shape != orig.shape:
            raise ValueError(f"{gen_path}: {gen.shape[1]}x{gen.shape[0]} but its original {orig_path} is "
                             f"{orig.shape[1]}x{orig.shape[0]}")
        out.append((np.array([gen.mean(axis=(0, 1)), orig_mean]), np.array([gen.std(), orig_std]),
                    float(np.abs(gen - orig).mean()), edge_alignment(gen, band), orig_align))
    return out


def generator_stats(records: RecordTable, threads: int = 2) -> dict[str, dict[str, dict[str, object]]]:
    """{generator: {target domain: statistics}} over generated ``records`` (kind ``generated``)."""
    rows_of: dict[tuple[str, str, str], list[int]] = defaultdict(list)  # a task per (original, label, source)
    for i, key in enumerate(zip(records.origin.tolist(), records.label.tolist(), records.source.tolist(),
                                strict=True)):
        rows_of[key].append(i)
    images = records.image.tolist()
    tasks = [(orig, label, records.label_maps.get(source), [images[i] for i in rows])
             for (orig, label, source), rows in rows_of.items()]
    with ThreadPoolExecutor(max(1, threads)) as pool:  # decoding releases the GIL
        per_task = list(pool.map(_per_original, tasks))
    results: dict[int, _Result] = {}
    for rows, task_results in zip(rows_of.values(), per_task, strict=True):
        results.update(zip(rows, task_results, strict=True))
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (src, dom) in enumerate(zip(records.source.tolist(), records.domain.tolist(), strict=True)):
        groups[(src, dom)].append(i)
    out: dict[str, dict[str, dict[str, object]]] = defaultdict(dict)
    for (src, dom), idx in sorted(groups.items()):
        means = np.mean([results[i][0] for i in idx], axis=0)
        stds = np.mean([results[i][1] for i in idx], axis=0)
        mad = float(np.mean([results[i][2] for i in idx]))
        gen_align = float(np.mean([results[i][3] for i in idx]))
        orig_align = float(np.mean([results[i][4] for i in idx]))
        out[src][dom] = {
            "images": len(idx),
            "generated_mean_rgb": [round(float(v), 3) for v in means[0]],
            "original_mean_rgb": [round(float(v), 3) for v in means[1]],
            "generated_mean": float(means[0].mean()), "original_mean": float(means[1].mean()),
            "generated_std": float(stds[0]), "original_std": float(stds[1]),
            "mean_abs_diff": mad, "mean_abs_diff_pct": 100 * mad / 255,
            "edge_alignment_generated": gen_align, "edge_alignment_original": orig_align,
            "layout_score": gen_align / orig_align if orig_align > 0 else float("nan"),
        }
    return dict(out)
