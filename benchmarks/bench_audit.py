"""`proveseg audit` on one run of 100,000 batches, against enumerating the same plan through the trainer's sampler.

The run's record is written by the trainer's own ConsumptionAudit fed the planned batches (no
training: the audit checks which weights were scored, not what they learnt; an untrained model's
best.pt stands in), then audited; the baseline is one pass of
PlanBatchSampler over the same 100,000 batches, the cheapest thing that touches every batch.
Both alternate over ``REPEATS`` rounds; min and median are printed. Target: the audit within 3x
one sampler pass (it re-derives the whole plan once and checks the record against it).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from proveseg.checkpoint import model_record, save_checkpoint
from proveseg.config import RunConfig, dump_config
from proveseg.data.audit import ConsumptionAudit, chain_sequence
from proveseg.data.classes import CITYSCAPES19
from proveseg.data.pipeline import build_training_data
from proveseg.data.plan import iter_plan
from proveseg.data.sampler import PlanBatchSampler
from proveseg.evaluate.runner import EvalResult, load_split, write_results
from proveseg.models import build_model
from proveseg.rundir import file_sha256
from proveseg.study.audit import audit_run
from proveseg.synth.build import SynthSpec, build_benchmark
from proveseg.train.loop import resolve_class_set_in

BATCHES, REPEATS = 100_000, 3


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench"
        build_benchmark(root, SynthSpec(seed=3, height=32, width=64, n_train=40, n_test=4, generators=("faithful",)))
        run_dir = Path(tmp) / "run"
        cfg = resolve_class_set_in(RunConfig.model_validate({
            "strategy": "gen_faithful", "output_dir": str(run_dir),
            "data": {"real": [{"name": "synthetic", "root": str(root / "train"), "domains": ["clear_day"]}],
                     "generated": [{"name": "faithful", "manifest": str(root / "generated/faithful/manifest.csv")}],
                     "real_gen_ratio": 0.5, "batch_size": 8},
            "train": {"max_iters": BATCHES}, "evaluation": {"test": [{"name": "t", "root": str(root / "test")}],
                                                            "n_boot": 200}}))
        data = build_training_data(cfg.data)
        audit = ConsumptionAudit(len(data.records))
        records = data.records
        sequence = ""
        for planned in iter_plan(data.spec, 0, BATCHES):
            for ids in planned.ids[:, 0, :]:
                audit.update({"kind": records.kind[ids].tolist(), "source": records.source[ids].tolist(),
                              "domain": records.domain[ids].tolist(), "index": ids})
                sequence = chain_sequence(sequence, ids)
        run_dir.mkdir()
        best = run_dir / "checkpoints" / "best.pt"
        best.parent.mkdir()
        model = build_model(cfg.model.name, CITYSCAPES19.num_classes)
        save_checkpoint(best, {"model": model_record(model, CITYSCAPES19), "state_dict": model.network.state_dict(),
                               "config": dump_config(cfg), "iteration": BATCHES, "sequence_sha256": sequence,
                               "weights": "raw"})
        doc = audit.to_dict(records, data.requested(), data.hashes, data.validation, [])
        doc["consumed"].update(sequence_sha256=sequence, iterations=BATCHES)  # type: ignore[union-attr]
        (run_dir / "log.jsonl").write_text(json.dumps({"iteration": BATCHES, "loss": 0.0}) + "\n")
        doc["log_sha256"] = file_sha256(run_dir / "log.jsonl")
        (run_dir / "composition.json").write_text(json.dumps(doc))
        (run_dir / "run.yaml").write_text(dump_config(cfg))
        test = load_split(cfg.evaluation.test)
        rng = np.random.default_rng(0)
        per_image = rng.integers(0, 50, (len(test), 19, 19))
        write_results(run_dir, EvalResult(per_image, test.domain.tolist(), test.image.tolist()), CITYSCAPES19,
                      n_boot=200, iteration=BATCHES,
                      extra={"checkpoint": str(best), "weights_sha256": file_sha256(best)})
        (run_dir / "status").write_text("done\n")

        baseline, audited = [], []
        for _ in range(REPEATS):
            start = time.perf_counter()
            for _ in PlanBatchSampler(data.spec, 0, BATCHES, chunk=256):
                pass
            baseline.append(time.perf_counter() - start)
            start = time.perf_counter()
            result = audit_run(run_dir)
            audited.append(time.perf_counter() - start)
            assert result.verdict == "verified", result.reasons
        ratio = float(np.median(audited) / np.median(baseline))
        print(f"audit of one run of {BATCHES:,} batches (batch 8), {REPEATS} interleaved rounds, min / median; "
              f"load {os.getloadavg()[0]:.1f}: {min(audited):.2f} / {np.median(audited):.2f} s, "
              f"verdict {result.verdict}")
        print(f"baseline, one pass of the trainer's sampler over the same plan: {min(baseline):.2f} / "
              f"{np.median(baseline):.2f} s")
        print(f"ratio audit / sampler pass (medians): {ratio:.2f} (target <= 3: {'met' if ratio <= 3 else 'NOT met'})")

if __name__ == "__main__":
    main()
