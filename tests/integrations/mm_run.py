"""Build and run an MMEngine Runner from a config file the way a user writes it (also run under torchrun).

``python -m torch.distributed.run --nproc_per_node 2 tests/integrations/mm_run.py BENCHMARK RESULTS WORK_DIR``
trains the 2-process run (gloo, CPU).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from proveseg.config import dump_config
from tests.integrations.conftest import make_run_config

CONFIG = """
custom_imports = dict(imports=['proveseg.integrations.mmengine', 'tests.integrations.mm_parts'],
                      allow_failed_imports=False)
model = dict(type='TinySegModel')
work_dir = {work_dir!r}
train_dataloader = dict(
    batch_size=2, num_workers=0,
    sampler=dict(type='ProvesegSampler', infinite=True),
    dataset=dict(type='ProvesegDataset', run_config={run_config!r},
                 pipeline=[dict(type='LoadProvesegSample'), dict(type='PackTiny')]))
train_cfg = dict(type='IterBasedTrainLoop', max_iters={max_iters})
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                     logger=dict(type='LoggerHook', interval=1))
custom_hooks = [dict(type='ProvesegProofHook')] + {extra_hooks!r}
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
launcher = {launcher!r}
model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)  # CPU processes: no device ids
"""


def write_config(benchmark: Path, results: Path, work_dir: Path, max_iters: int = 6, launcher: str = "none",
                 extra_hooks: list[dict[str, Any]] | None = None) -> Path:
    work_dir.mkdir(parents=True, exist_ok=True)
    run_config = work_dir / "proveseg-run.yaml"
    run_config.write_text(dump_config(make_run_config(benchmark, results, max_iters)), encoding="utf-8")
    path = work_dir / "config.py"
    path.write_text(CONFIG.format(work_dir=str(work_dir), run_config=str(run_config), max_iters=max_iters,
                                  launcher=launcher, extra_hooks=extra_hooks or []), encoding="utf-8")
    return path


def run(config: Path, resume_from: Path | None = None, score: bool = True) -> Any:
    """Train (resuming from ``resume_from``), then score the test split with the trained model (rank 0)."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    from proveseg.integrations.mmengine import ProvesegProofHook

    cfg = Config.fromfile(str(config))
    if resume_from is not None:
        cfg.load_from, cfg.resume = str(resume_from), True
    runner = Runner.from_cfg(cfg)
    hook = next(h for h in runner.hooks if isinstance(h, ProvesegProofHook))
    try:
        runner.train()
    except BaseException:
        if hook.proof is not None:  # a dying process drops its run-directory lock; this one lives on in the test
            hook.proof.close()
        raise
    if score and hook.proof is not None and hook.proof.writer:
        scorer = hook.proof.test_scorer()
        model = runner.model.module if hasattr(runner.model, "module") else runner.model
        model.eval()
        with torch.no_grad():
            for batch in DataLoader(scorer.dataset, batch_size=2):
                logits = model([(img * 255).to(torch.uint8) for img in batch["image"]], mode="tensor")
                scorer.update(logits.argmax(1), batch["mask"], batch["index"])
        hook.proof.write_metrics(scorer)
    return runner


if __name__ == "__main__":
    import torch.distributed as dist

    dist.init_process_group("gloo")  # mmengine 0.10.7 calls torch.cuda.set_device when it initialises the group
    bench, res, work = (Path(a) for a in sys.argv[1:4])
    run(write_config(bench, res, work, launcher="pytorch"))
    dist.destroy_process_group()
