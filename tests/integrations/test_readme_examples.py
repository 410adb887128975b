"""The README's "own trainer" examples run as written (fewer iterations, the tiny benchmark) and are verified."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest
import yaml

from proveseg.study.audit import audit_target

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = README.read_text(encoding="utf-8").split("## Using proveseg's mixing in your own trainer", 1)[1]
SECTION = SECTION.split("\n## ", 1)[0]
FILES = {m.group(1): m.group(0) for m in re.finditer(r"^# (\w+\.py)\n.*?(?=^```)", SECTION, re.S | re.M)}
SHORTER = [("max_iters=100", "max_iters=4"), ("max_steps=100", "max_steps=4"), ("interval=50", "interval=2")]


def _workspace(tmp_path: Path, benchmark: Path) -> Path:
    """The README's files in a folder whose data/synthetic is the tiny benchmark; 4 iterations, 32x32 crops."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "synthetic").symlink_to(benchmark)
    run = yaml.safe_load(re.search(r"```yaml\n(name: my-trainer.*?)```", SECTION, re.S).group(1))  # type: ignore[union-attr]
    run["train"]["max_iters"], run["data"]["transforms"]["crop"] = 4, [32, 32]
    (tmp_path / "my-run.yaml").write_text(yaml.safe_dump(run), encoding="utf-8")
    for name, text in FILES.items():
        for long, short in SHORTER:
            text = text.replace(long, short)
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path / "results" / "mine"


def test_the_section_holds_every_example() -> None:
    assert set(FILES) == {"train_torch.py", "my_parts.py", "my_config.py", "train_mm.py", "train_lightning.py"}


@pytest.mark.parametrize("script", ["train_torch.py", "train_mm.py", "train_lightning.py"])
def test_readme_example_trains_a_verified_run(script: str, tiny_benchmark: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip({"train_mm.py": "mmengine", "train_lightning.py": "lightning"}.get(script, "torch"))
    results = _workspace(tmp_path, tiny_benchmark)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    runpy.run_path(str(tmp_path / script), run_name="__main__")
    report = audit_target(results / "stage1/gen_faithful/synthetic/myconv_ratio0p50_s0")
    assert report["counts"]["verified"] == 1, report["runs"]
