"""Self-training: thresholds, the EMA teacher, ST counts, a tiny end-to-end run, and diagnostics."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from proveseg.cli import main
from proveseg.config import RunConfig, SelfTrainConfig
from proveseg.models import PixelLogitModel
from proveseg.train.diagnose import diagnose
from proveseg.train.loop import Preempted, train
from proveseg.train.selftrain import DEFAULT_CLASS_THRESHOLD, SelfTrainer


class FixedLogits(nn.Module):
    """Logits that do not depend on the input: class 0 at 0.95 confidence on the left half, class 1 at ~0.6."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        logits = torch.zeros(n, 3, h, w)
        logits[:, 0, :, : w // 2] = 4.0  # softmax ~ 0.96 for class 0
        logits[:, 1, :, w // 2:] = 1.0  # softmax ~ 0.58 for class 1
        return logits * self.scale


def _trainer(threshold: object, **kw: object) -> SelfTrainer:
    return SelfTrainer(SelfTrainConfig(threshold=threshold, **kw), PixelLogitModel("fixed", FixedLogits(), 3), seed=0)


def test_global_classwise_and_adaptive_thresholds_mask_what_they_should() -> None:
    x = torch.zeros(2, 3, 4, 8)
    _, conf, keep = _trainer(0.9).pseudo_labels(x)
    assert keep[..., :4].all() and not keep[..., 4:].any()
    _, _, keep = _trainer({1: 0.5}).pseudo_labels(x)  # class 1 lowered, class 0 at the default 0.9
    assert keep.all()
    _, _, keep = _trainer({0: 0.99, 1: 0.5}).pseudo_labels(x)
    assert not keep[..., :4].any() and keep[..., 4:].all()
    adaptive = _trainer("adaptive", adaptive_momentum=0.0, adaptive_floor=0.3, adaptive_quantile=0.5)
    _, conf, keep = adaptive.pseudo_labels(x)
    assert adaptive.thresholds[1] == pytest.approx(float(conf[..., 4:].median()))  # moved to the quantile
    assert adaptive.thresholds[2] == DEFAULT_CLASS_THRESHOLD  # never predicted: untouched
    assert keep.all()


def test_st_count_matches_a_direct_count() -> None:
    st = _trainer({1: 0.5, 0: 0.99}, cutmix=False)
    strong, target, stats = st.prepare(torch.zeros(2, 3, 4, 8), step=0)
    assert stats["st_count"] == 2 * 4 * 4 == int((target != 255).sum())
    assert stats["st_count_per_class"] == [0, 32, 0] and stats["pseudo_hist"] == [32, 32, 0]
    assert strong.shape == (2, 3, 4, 8)


def test_the_teacher_is_never_updated_by_the_optimizer() -> None:
    student = nn.Conv2d(3, 3, 1)
    st = SelfTrainer(SelfTrainConfig(teacher_decay=0.5), PixelLogitModel("conv", student, 3), 0)
    opt = torch.optim.SGD(student.parameters(), lr=1.0)
    teacher_params = {id(p) for p in st.teacher.parameters()}
    assert not teacher_params & {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(not p.requires_grad for p in st.teacher.parameters())
    before = [p.clone() for p in st.teacher.module.parameters()]
    student(torch.randn(1, 3, 4, 4)).sum().backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, st.teacher.module.parameters(), strict=True))
    st.update(student)  # the first update copies, the second averages
    st.update(student)
    assert all(torch.allclose(t, s) for t, s in zip(st.teacher.module.parameters(), student.parameters(),
                                                       strict=True))


def _selftrain_config(root: Path, out: Path, **train: object) -> RunConfig:
    clear = ["clear_day"]
    return RunConfig.model_validate({
        "output_dir": str(out), "strategy": "selftrain", "model": {"name": "unet_micro"},
        "data": {"real": [{"name": "lab", "root": str(root / "train"), "domains": clear, "take": [0.0, 0.5]}],
                 "unlabeled": [{"name": "unl", "root": str(root / "train"), "domains": clear, "take": [0.5, 1.0]}],
                 "unlabeled_share": 0.5, "batch_size": 4},
        "train": {"max_iters": 6, "eval_interval": 3, "log_interval": 1, "checkpoint_interval": 2,
                  "num_threads": 1, "selftrain": {"threshold": "adaptive", "st_warmup_iters": 2}, **train},
        "evaluation": {"val": [{"name": "t", "root": str(root / "test"), "domains": ["night"]}],
                       "test": [{"name": "t", "root": str(root / "test"), "domains": ["fog"]}], "n_boot": 20}})


def test_selftrain_run_end_to_end_and_exact_resume(tiny_benchmark: Path, tmp_path: Path) -> None:
    full = _selftrain_config(tiny_benchmark, tmp_path / "full")
    train(full)
    comp = json.loads((full.output_dir / "composition.json").read_text())
    assert comp["consumed"]["per_kind"] == {"real": 12, "generated": 0, "noise": 0, "unlabeled": 12}
    assert comp["consumed"]["unique_per_source"] == {"lab": 2, "unl": 2}  # disjoint halves of 4 scenes
    steps = [json.loads(x) for x in (full.output_dir / "log.jsonl").read_text().splitlines() if '"loss"' in x]
    assert all(len(s["st_count_per_class"]) == 19 and s["teacher_probe_acc"] is not None for s in steps)
    assert [s["st_weight"] for s in steps[:3]] == [0.0, 0.5, 1.0]
    cut = _selftrain_config(tiny_benchmark, tmp_path / "cut")
    with pytest.raises(Preempted):
        train(cut, stop_after=4)
    train(cut, resume=True)
    a = torch.load(full.output_dir / "checkpoints/last.pt", weights_only=True)
    b = torch.load(cut.output_dir / "checkpoints/last.pt", weights_only=True)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    ta, tb = a["selftrain"]["teacher"], b["selftrain"]["teacher"]
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_unlabeled_data_needs_selftrain(tiny_benchmark: Path, tmp_path: Path) -> None:
    cfg = _selftrain_config(tiny_benchmark, tmp_path / "x").model_dump()
    cfg["train"]["selftrain"] = None
    with pytest.raises(ValueError, match=r"needs train\.selftrain"):
        RunConfig.model_validate(cfg)


def _log(tmp_path: Path) -> Path:
    """A log that peaks at iteration 200 and declines by 6 points; few pixels pass; class 2 never."""
    lines = []
    for it in range(10, 510, 10):
        per_class = [5, 3, 0] + [1] * 16
        lines.append({"iteration": it, "loss": 1.0, "lr": 0.01 * (1 - it / 500), "train_acc": 0.95,
                      "st_fraction": 0.02, "st_count": 100, "st_count_per_class": per_class})
        if it % 100 == 0:
            miou = {100: 0.30, 200: 0.40, 300: 0.37, 400: 0.35, 500: 0.34}[it]
            lines.append({"iteration": it, "eval": {"mIoU": miou, "aAcc": 0.7, "per_domain": {}}, "early_stop": False})
    path = tmp_path / "run"
    path.mkdir()
    (path / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_diagnose_finds_the_peak_the_decline_and_st_health(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = _log(tmp_path)
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    found = {f.name: f for f in diagnose(records, class_names=[f"c{i}" for i in range(19)])}
    assert found["peak"].numbers["best_iteration"] == 200 and found["peak"].numbers["lr_at_peak"] == pytest.approx(
        0.01 * (1 - 200 / 500))
    assert found["decline_after_peak"].numbers["points"] == pytest.approx(6.0)
    assert found["decline_after_peak"].numbers["iterations"] == 300
    assert found["train_val_gap"].numbers["gap_points"] == pytest.approx(25.0)
    assert found["st_count_low"].numbers["mean_st_fraction"] == pytest.approx(0.02)
    assert found["classes_never_pseudo_labelled"].numbers["classes"] == [2]
    assert main(["diagnose", str(run)]) == 0
    assert "decline_after_peak" in capsys.readouterr().out
    assert main(["curves", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 5000


def _rank_data(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank r predicts class r on one image and the shared class 2 on the other, with its own confidences."""
    conf = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(rank))
    pseudo = torch.full((2, 8, 8), rank)
    pseudo[1] = 2
    return conf, pseudo


def _adapt_on_rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        st = _trainer("adaptive", adaptive_momentum=0.0, adaptive_floor=0.0)
        st._adapt(*_rank_data(rank))
        gathered = [torch.zeros(3) for _ in range(world)]
        dist.all_gather(gathered, st.thresholds)
        if rank == 0:
            torch.save(torch.stack(gathered), out)
    finally:
        dist.destroy_process_group()


def test_adaptive_thresholds_are_the_same_on_every_ddp_rank(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "thresholds.pt"
    mp.spawn(_adapt_on_rank, args=(2, port, str(out)), nprocs=2, join=True)
    per_rank = torch.load(out, weights_only=True)
    assert torch.equal(per_rank[0], per_rank[1])  # a checkpoint (rank 0) holds what every rank used
    q = {}
    for rank in (0, 1):
        conf, pseudo = _rank_data(rank)
        q[rank] = {c: torch.quantile(conf[pseudo == c], 0.5) for c in torch.unique(pseudo).tolist()}
    expected = torch.stack([q[0][0], q[1][1], (q[0][2] + q[1][2]) / 2])  # seen by one rank, or averaged
    assert torch.allclose(per_rank[0], expected)
    assert not torch.allclose(q[0][2], q[1][2])  # the ranks did see different confidences for class 2
