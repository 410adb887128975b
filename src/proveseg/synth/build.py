"""Write the synthetic adverse-weather benchmark to disk: real splits, generators, manifests.

Layout (relative to the output folder)::

    info.json                                   parameters and counts; written last
    .proveseg-root                              marks the data root that manifest paths may not leave
    {train,test}/images/<domain>/scene_NNNNNN.jpg
    {train,test}/labels/<domain>/scene_NNNNNN.png  train ids, 255 = ignore (palette PNG)
    {train,test}/depth/scene_NNNNNN.png         uint16 depth in centimetres
    generated/<generator>/<target>/scene_NNNNNN.jpg
    generated/<generator>/manifest.csv          DESIGN.md section 3 columns

Every scene draws from its own RNG stream keyed by (seed, split, scene, purpose), so the bytes
written do not depend on the number of worker processes or on the order they finish in.
"""

from __future__ import annotations

import csv
import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from proveseg import __version__
from proveseg.atomic import atomic_write_json, atomic_write_text
from proveseg.data.classes import CITYSCAPES19
from proveseg.data.manifest import ROOT_MARKER
from proveseg.synth.generators import GENERATORS, get_generator
from proveseg.synth.layout import make_scene
from proveseg.synth.render import DOMAINS, SOURCE_DOMAIN, render, to_uint8

__all__ = ["DATASET_NAME", "MANIFEST_COLUMNS", "SynthSpec", "build_benchmark"]

MANIFEST_COLUMNS = ("generated_path", "original_path", "label_path", "dataset", "source_domain", "target_domain")
DATASET_NAME = "synthetic"
FORMAT_VERSION = 1
JPEG_QUALITY = 92
_SPLITS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class SynthSpec:
    """Everything that determines the benchmark's bytes."""

    seed: int = 0
    height: int = 128
    width: int = 256
    n_train: int = 120
    n_test: int = 30
    generators: tuple[str, ...] = field(default_factory=lambda: tuple(GENERATORS))

    def __post_init__(self) -> None:
        if self.height < 32 or self.width < 32:
            raise ValueError(f"size {self.height}x{self.width}: both sides must be >= 32 pixels")
        if self.n_train < 1 or self.n_test < 1:
            raise ValueError(f"n_train={self.n_train}, n_test={self.n_test}: both must be >= 1")
        for name in self.generators:
            get_generator(name)


def _rng(spec: SynthSpec, *key: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, *key])


def _save_rgb(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(img)).save(path, quality=JPEG_QUALITY)


def _save_label(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(label)  # mode L; putpalette turns it into P with the ids unchanged
    im.putpalette(CITYSCAPES19.palette_bytes())
    im.save(path, optimize=False)


def _save_depth(path: Path, depth: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.rint(depth * 100), 0, 65535).astype(np.uint16)).save(path)


def _write_scene(args: tuple[SynthSpec, str, int, str]) -> list[list[str]]:
    """Render one scene in every domain (and, for train, every generator); return manifest rows."""
    spec, split, index, out = args
    root, name = Path(out), f"scene_{index:06d}"
    split_id = _SPLITS[split]
    scene = make_scene(_rng(spec, split_id, index, 0), spec.height, spec.width)
    _save_depth(root / split / "depth" / f"{name}.png", scene.depth)
    clear = None
    for d, domain in enumerate(DOMAINS):
        img = render(scene, domain, _rng(spec, split_id, index, 1, d))
        clear = img if domain == SOURCE_DOMAIN else clear
        _save_rgb(root / split / "images" / domain / f"{name}.jpg", img)
        _save_label(root / split / "labels" / domain / f"{name}.png", scene.label)
    rows: list[list[str]] = []
    if split != "train":
        return rows
    assert clear is not None
    for gen_name in spec.generators:
        gen_id = list(GENERATORS).index(gen_name)
        for d, target in enumerate(DOMAINS):
            if target == SOURCE_DOMAIN:
                continue
            img = get_generator(gen_name)(scene, clear, target, _rng(spec, 2, index, gen_id, d))
            _save_rgb(root / "generated" / gen_name / target / f"{name}.jpg", img)
            rows.append([gen_name, f"{target}/{name}.jpg", f"../../train/images/{SOURCE_DOMAIN}/{name}.jpg",
                         f"../../train/labels/{SOURCE_DOMAIN}/{name}.png", DATASET_NAME, SOURCE_DOMAIN, target])
    return rows


def summarize(spec: SynthSpec) -> dict[str, dict[str, dict[str, int]]]:
    """Image counts per split and domain, and per generator and target domain."""
    real = {split: {d: n for d in DOMAINS} for split, n in (("train", spec.n_train), ("test", spec.n_test))}
    gen = {g: {d: spec.n_train for d in DOMAINS if d != SOURCE_DOMAIN} for g in spec.generators}
    return {"real": real, "generated": gen}


def build_benchmark(out: str | os.PathLike[str], spec: SynthSpec, workers: int = 1,
                    force: bool = False, progress: bool = False) -> dict:
    """Write the benchmark under ``out`` and return its ``info.json`` content.

    An existing benchmark with the same spec is reused unless ``force``; ``info.json`` is written
    last, so an interrupted build is never mistaken for a complete one.
    """
    root = Path(out)
    info_path = root / "info.json"
    wanted = {"format_version": FORMAT_VERSION, "spec": {**asdict(spec), "generators": list(spec.generators)}}
    if info_path.exists() and not force:
        info = json.loads(info_path.read_text())
        if {k: info.get(k) for k in wanted} == wanted:
            return info
    jobs = [(spec, split, i, str(root)) for split, n in (("train", spec.n_train), ("test", spec.n_test))
            for i in range(n)]
    rows: list[list[str]] = []
    with _progress(progress) as bar:
        task = bar.add_task("rendering scenes", total=len(jobs))
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                for r in pool.map(_write_scene, jobs, chunksize=4):
                    rows += r
                    bar.advance(task)
        else:
            for job in jobs:
                rows += _write_scene(job)
                bar.advance(task)
    for gen_name in spec.generators:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(sorted(r[1:] for r in rows if r[0] == gen_name))
        atomic_write_text(root / "generated" / gen_name / "manifest.csv", buf.getvalue())
    info = {**wanted, "proveseg_version": __version__, "dataset": DATASET_NAME, "class_set": CITYSCAPES19.name,
            "domains": list(DOMAINS), "source_domain": SOURCE_DOMAIN, "counts": summarize(spec)}
    (root / ROOT_MARKER).write_text("data root for manifest path checks (see proveseg.data.manifest)\n")
    atomic_write_json(info_path, info)
    return info


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not enabled, transient=True)
