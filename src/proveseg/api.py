"""proveseg's exact mixing and its proof, for any PyTorch training loop.

The same code path as ``proveseg train``, in four pieces a foreign trainer can hold:

- :class:`MixedData` reads a run config (a YAML file, a :class:`~proveseg.config.RunConfig`, a mapping or a
  bare :class:`~proveseg.config.DataConfig`) through :func:`proveseg.data.pipeline.build_training_data`:
  the record table, the exact batch plan and the dataset.
- :class:`PlanSampler` is the plan's torch batch sampler for one rank. Its position is one integer
  (``state_dict`` / ``load_state_dict``, so torchdata's ``StatefulDataLoader`` or any checkpoint can hold
  it); resuming recomputes the plan from that batch on, it never replays batches.
- :class:`ProofRun` counts what the loop received (:class:`~proveseg.data.audit.ConsumptionAudit` and the
  chained ``sequence_sha256``) and writes the run directory in the contract of ``proveseg train``
  (``run.yaml``, ``status``, ``log.jsonl``, ``composition.json``; docs/contracts.md#run-directory).
- :class:`TestScorer` turns the user's own test predictions into ``metrics.json`` and ``confusion.npz``
  (the metric rules of ``proveseg evaluate``), so ``proveseg audit`` and ``proveseg leaderboard`` check and
  rank the run like a native one.

Nothing here imports MMEngine or Lightning; their adapters live in :mod:`proveseg.integrations`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from proveseg.config import ConfigError, DataConfig, RunConfig, dump_config, load_run_config
from proveseg.data.audit import CompositionMismatch, ConsumptionAudit, chain_sequence
from proveseg.data.classes import ClassSet
from proveseg.data.dataset import SegmentationDataset
from proveseg.data.pipeline import TrainingData, build_training_data
from proveseg.data.plan import iter_plan
from proveseg.data.records import RecordTable
from proveseg.data.transforms import TransformSpec
from proveseg.rundir import RunDir, RunLock, code_version, file_sha256
from proveseg.strategies import Strategy, parse_strategy

__all__ = ["CompositionMismatch", "MixedData", "PlanSampler", "ProofRun", "TestScorer", "composition_document",
           "load_config", "sample_ids"]

AllReduce = Callable[[np.ndarray], np.ndarray]


def load_config(source: str | Path | RunConfig | DataConfig | Mapping[str, Any]) -> RunConfig:
    """A validated run config from a YAML path, a RunConfig, a DataConfig (strategy ``custom``) or a mapping."""
    if isinstance(source, RunConfig):
        return source
    if isinstance(source, DataConfig):
        return RunConfig(data=source)
    if isinstance(source, Mapping):
        from pydantic import ValidationError

        try:
            return RunConfig.model_validate(dict(source))
        except ValidationError as exc:
            raise ConfigError(f"run config: {exc}") from None
    return load_run_config(source)


def sample_ids(batch: Mapping[str, Any]) -> np.ndarray:
    """The global sample ids of a collated proveseg batch (its ``index`` field), as int64."""
    return np.asarray(torch.as_tensor(batch["index"]).cpu(), dtype=np.int64).reshape(-1)


class MixedData:
    """A run config's training data: records, exact batch plan and dataset, built by proveseg's own pipeline.

    ``world_size`` is the number of ranks (processes) the plan deals every global batch to; each rank's
    batch has the same composition and ranks never share a sample within a pass.
    """

    def __init__(self, config: RunConfig, world_size: int = 1, uint8: bool = False) -> None:
        from proveseg.train.loop import resolve_class_set_in

        self.config = resolve_class_set_in(config)
        self.strategy: Strategy = parse_strategy(self.config.strategy)
        problem = self.strategy.plan_problem(self.config.data)
        if problem:
            raise ConfigError(f"{self.config.name}: {problem}")
        self.world_size = world_size
        self.data: TrainingData = build_training_data(self.config.data, world_size)
        # proveseg's own loop takes uint8 batches and normalises on its device; a user's loop gets model-ready
        # float images unless it asks for uint8 (then: proveseg.data.transforms.to_model_input on the device)
        ds = self.data.dataset
        self._dataset = ds if uint8 else SegmentationDataset(
            ds.records, ds.class_set, dataclasses.replace(ds.transform, to_float=True), ds.seed)

    @classmethod
    def from_config(cls, source: str | Path | RunConfig | DataConfig | Mapping[str, Any],
                    world_size: int = 1, uint8: bool = False) -> MixedData:
        """Read the sources of ``source`` (see :func:`load_config`) and build the plan for ``world_size`` ranks.

        ``uint8``: the dataset's images stay uint8 (normalise them on the device with ``to_model_input``).
        """
        return cls(load_config(source), world_size, uint8)

    @property
    def dataset(self) -> SegmentationDataset:
        """Samples ``{image, mask, domain, kind, source, index}`` keyed by the sampler's (id, pass) pairs:
        float32 ImageNet-normalised images and int64 masks, or uint8 both with ``uint8=True``."""
        return self._dataset

    @property
    def records(self) -> RecordTable:
        return self.data.records

    @property
    def class_set(self) -> ClassSet:
        return self.data.class_set

    @property
    def batch_size(self) -> int:
        """Per-rank batch size."""
        return self.data.spec.batch_size

    def default_batches_per_epoch(self) -> int:
        """An epoch for epoch-based trainers: as many global batches as the records fill (at least one)."""
        return max(1, math.ceil(len(self.records) / (self.batch_size * self.world_size)))

    def batch_sampler(self, rank: int = 0, batches_per_epoch: int | None = None,
                      num_batches: int | None = None) -> PlanSampler:
        """The plan's batch sampler for ``rank`` (see :class:`PlanSampler`)."""
        return PlanSampler(self, rank, batches_per_epoch or self.default_batches_per_epoch(), num_batches)

    def info(self, index: int) -> dict[str, Any]:
        """One record as a data-info dict: paths, dataset, domain, kind, source and its global id."""
        r = self.records
        return {"img_path": str(r.image[index]),  # a noise entry's is its origin: its pixels are drawn, not read
                "seg_map_path": str(r.label[index]) or None, "dataset": str(r.dataset[index]),
                "domain": str(r.domain[index]), "kind": str(r.kind[index]), "source": str(r.source[index]),
                "proveseg_id": int(index)}

    def test_records(self) -> RecordTable:
        """The records of ``evaluation.test`` in the run config (what ``metrics.json`` must score)."""
        from proveseg.evaluate.runner import load_split

        return load_split(self.config.evaluation.test)


class PlanSampler(Sampler[list[tuple[int, int]]]):
    """One rank's batches of the plan, as lists of (global id, pass) keys; resumable by one integer.

    ``position`` is the next global batch. An epoch is ``batches_per_epoch`` batches; iterating yields
    from ``position`` to the end of its epoch (a mid-epoch resume finishes that epoch), or to
    ``num_batches`` when given. ``state_dict()`` after ``k`` yielded batches resumes at batch ``k``.
    """

    def __init__(self, mixed: MixedData, rank: int, batches_per_epoch: int, num_batches: int | None = None) -> None:
        if not 0 <= rank < mixed.world_size:
            raise ValueError(f"rank {rank} outside a world of size {mixed.world_size}")
        if batches_per_epoch < 1:
            raise ValueError(f"batches_per_epoch {batches_per_epoch} must be >= 1")
        self.mixed, self.rank, self.batches_per_epoch, self.num_batches = mixed, rank, batches_per_epoch, num_batches
        self.position = 0

    def epoch_end(self) -> int:
        """Where iterating from ``position`` stops: the end of its epoch, or ``num_batches``."""
        end = (self.position // self.batches_per_epoch + 1) * self.batches_per_epoch
        return end if self.num_batches is None else min(end, self.num_batches)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        spec = self.mixed.data.spec
        for planned in iter_plan(spec, self.position, self.epoch_end(), chunk=256):
            ids, passes = planned.ids[:, self.rank].tolist(), planned.passes[:, self.rank].tolist()
            for batch_ids, batch_passes in zip(ids, passes, strict=True):
                self.position += 1  # counted before the yield: a state_dict taken now resumes after this batch
                yield list(zip(batch_ids, batch_passes, strict=True))

    def set_epoch(self, epoch: int) -> None:
        """Skip to ``epoch``'s first batch if behind it (an epoch cut short); never goes back."""
        self.position = max(self.position, epoch * self.batches_per_epoch)

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position, "seed": self.mixed.data.spec.seed, "world_size": self.mixed.world_size}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume at ``state["position"]``; a state of another seed or world size is refused."""
        spec = self.mixed.data.spec
        world = int(state.get("world_size", self.mixed.world_size))
        if int(state.get("seed", spec.seed)) != spec.seed or world != self.mixed.world_size:
            raise ValueError(f"sampler state of seed {state.get('seed')} / world size {state.get('world_size')} "
                             f"cannot resume a plan of seed {spec.seed} / world size {self.mixed.world_size}")
        self.position = int(state["position"])


class TestScorer:
    """Per-image confusion matrices of the user's test predictions, then ``metrics.json`` + ``confusion.npz``.

    ``dataset`` is the run config's ``evaluation.test`` split as proveseg loads it (no augmentation).
    """

    __test__ = False  # its name starts with "Test": keeps pytest from collecting it where a test imports it

    def __init__(self, mixed: MixedData) -> None:
        self.mixed = mixed
        self.records = mixed.test_records()
        self.dataset = SegmentationDataset(self.records, mixed.class_set, TransformSpec(hflip=False))
        self.matrices: dict[int, np.ndarray] = {}

    def update(self, predictions: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
               indices: torch.Tensor | np.ndarray | Sequence[int]) -> None:
        """Score (N, H, W) class-id predictions against labels (255 = ignore) of test records ``indices``."""
        from proveseg.evaluate.confusion import confusion_matrix_torch

        pred, lab = torch.as_tensor(predictions), torch.as_tensor(labels)
        c = self.mixed.class_set.num_classes
        for i, index in enumerate(np.asarray(torch.as_tensor(indices).cpu()).reshape(-1).tolist()):
            self.add_confusion(int(index), confusion_matrix_torch(lab[i], pred[i], c).cpu().numpy())

    def add_confusion(self, index: int, matrix: np.ndarray) -> None:
        """Record test image ``index``'s (C, C) confusion matrix (rows = label, columns = prediction)."""
        c = self.mixed.class_set.num_classes
        if matrix.shape != (c, c):
            raise ValueError(f"confusion matrix of test image {index} has shape {matrix.shape}, expected ({c}, {c})")
        if index in self.matrices:
            raise ValueError(f"test image {index} ({self.records.image[index]}) scored twice")
        self.matrices[index] = np.asarray(matrix, dtype=np.int64)

    def result(self) -> Any:
        """The :class:`~proveseg.evaluate.runner.EvalResult`; every test image must have been scored."""
        from proveseg.evaluate.runner import EvalResult

        missing = sorted(set(range(len(self.records))) - set(self.matrices))
        if missing:
            raise ValueError(f"{len(missing)} of {len(self.records)} test images have no prediction "
                             f"(e.g. {self.records.image[missing[0]]})")
        order = sorted(self.matrices)
        return EvalResult(np.stack([self.matrices[i] for i in order]),
                          [str(self.records.domain[i]) for i in order], [str(self.records.image[i]) for i in order])


def composition_document(data: TrainingData, audit: ConsumptionAudit, sequence: str, iterations: int,
                         strategy: Strategy, data_config: DataConfig, all_reduce: AllReduce,
                         ) -> tuple[dict[str, Any], list[str]]:
    """The ``composition.json`` document and its problems: the request batch by batch, then the strategy's rule.

    Under DDP (``data.spec.world_size`` > 1) ``audit`` is first summed over ranks in place with ``all_reduce``
    (collective: every rank calls it); ``sequence`` is this rank's. ``proveseg train``'s loop writes its record
    with this function too.
    """
    expected = data.expected_composition(0, len(audit.per_batch))
    if data.spec.world_size > 1:
        audit.merge_ranks(data.records, all_reduce)
        expected = expected * data.spec.world_size
    problems = audit.mismatches(expected)
    doc = audit.to_dict(data.records, data.requested(), data.hashes, data.validation, problems)
    consumed: dict[str, Any] = doc["consumed"]  # type: ignore[assignment]
    consumed.update(sequence_sha256=sequence, iterations=iterations)
    proof = strategy.prove(data_config, consumed)
    if proof:
        problems.append(f"strategy {strategy.name} ({strategy.type}): {proof}")
    doc["strategy"] = {"name": strategy.name, "type": strategy.type, "shares": strategy.shares(data_config)}
    doc["file_fingerprints"] = dict(sorted(data.file_prints.items()))
    doc["matches_request"], doc["problems"] = not problems, problems
    return doc, problems


def _copy_audit(audit: ConsumptionAudit) -> ConsumptionAudit:
    out = ConsumptionAudit(len(audit.seen), audit.keep_batches)
    out.load_state_dict(audit.state_dict())
    return out


class ProofRun:
    """What one rank consumed, and the run directory's proof files (rank 0 writes them).

    ``trainer`` names the training framework in ``run.yaml``'s comments. ``max_iters`` and ``grad_accum``
    are the trainer's (an iteration consumes ``grad_accum`` batches); they are written into ``run.yaml`` so
    that ``proveseg audit`` re-derives the plan the run consumed.
    """

    def __init__(self, mixed: MixedData, rank: int = 0, trainer: str = "pytorch", max_iters: int | None = None,
                 grad_accum: int = 1, output_dir: str | Path | None = None) -> None:
        train = mixed.config.train.model_copy(update={"grad_accum": grad_accum,
                                                      **({"max_iters": max_iters} if max_iters else {})})
        update: dict[str, Any] = {"train": train}
        if output_dir is not None:
            update["output_dir"] = Path(output_dir)
        self.config = mixed.config.model_copy(update=update)
        self.mixed, self.rank, self.trainer = mixed, rank, trainer
        self.run = RunDir(self.config.output_dir)
        self.audit = ConsumptionAudit(len(mixed.records))
        self.sequence = ""
        self._lock = RunLock(self.run.root)
        self._tensorboard: Any = None
        self._paired: np.ndarray | None = None  # the records' pair mask, computed on first use

    @property
    def writer(self) -> bool:
        return self.rank == 0

    @property
    def batches(self) -> int:
        """Batches consumed so far (the sampler's resume position)."""
        return len(self.audit.per_batch)

    @property
    def iterations(self) -> int:
        return self.batches // self.config.train.grad_accum

    def start(self, resume: bool = False) -> None:
        """Rank 0: lock the run directory, write ``run.yaml`` and ``status running`` (a fresh start clears the log)."""
        if not self.writer:
            return
        self._lock.acquire()
        self.run.create()
        self.run.opened = True
        self.run.remove_stale_temp_files()
        if resume:
            self.run.truncate_log(self.iterations)
        else:
            self.run.log_path.unlink(missing_ok=True)
        versions = {**code_version(), "trainer": self.trainer}
        self.run.write_text("run.yaml", dump_config(self.config) + "# code version\n" + "".join(
            f"# {k}: {v}\n" for k, v in versions.items()))
        self.run.set_status("running", f"resumed at iteration {self.iterations}" if resume else "")
        if self.config.train.tensorboard:
            from proveseg.train.tensorboard import TensorBoardWriter

            self._tensorboard = TensorBoardWriter(self.run.root, self.iterations if resume else 0)

    def record(self, ids: np.ndarray | torch.Tensor | Sequence[int]) -> None:
        """Count one consumed batch from its global sample ids (kind, source and domain come from the records)."""
        index = np.asarray(torch.as_tensor(ids).cpu(), dtype=np.int64).reshape(-1)
        r = self.mixed.records
        batch: dict[str, Any] = {"kind": r.kind[index].tolist(), "source": r.source[index].tolist(),
                                 "domain": r.domain[index].tolist(), "index": index}
        if r.has_pairs:  # counted like the native loop's ``paired`` key, so the audit re-derives the same counts
            if self._paired is None:
                self._paired = r.paired()
            batch["paired"] = self._paired[index]
        self.audit.update(batch)
        self.sequence = chain_sequence(self.sequence, index)

    def log(self, record: Mapping[str, Any]) -> None:
        """Rank 0: one ``log.jsonl`` line (and TensorBoard scalars when ``train.tensorboard`` is on)."""
        if not self.writer:
            return
        self.run.log(dict(record))
        if self._tensorboard is not None:
            self._tensorboard.write(dict(record), self.audit.sources)

    def state_dict(self) -> dict[str, Any]:
        """The consumption record so far (tensors and plain containers: ``torch.load(weights_only=True)`` reads it)."""
        return {"audit": self.audit.state_dict(), "sequence": self.sequence,
                "sampler": {"position": self.batches, "seed": self.mixed.data.spec.seed,
                            "world_size": self.mixed.world_size}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the record of :meth:`state_dict`; the sampler resumes at ``state["sampler"]["position"]``."""
        self.audit.load_state_dict(state["audit"])
        self.sequence = str(state["sequence"])

    def composition(self, all_reduce: AllReduce | None = None) -> tuple[dict[str, Any], list[str]]:
        """The ``composition.json`` document and its problems, summed over ranks with ``all_reduce`` under DDP.

        Every rank must call it (the sums are collective); the live record is left unchanged.
        """
        return composition_document(self.mixed.data, _copy_audit(self.audit), self.sequence, self.iterations,
                                    self.mixed.strategy, self.config.data, all_reduce or _torch_all_reduce)

    def write_composition(self, all_reduce: AllReduce | None = None) -> dict[str, Any]:
        """Write ``composition.json`` for the batches so far (at a checkpoint); collective under DDP."""
        doc, _ = self.composition(all_reduce)
        if self.writer:
            self.run.write_json("composition.json", doc)
        return doc

    def finish(self, all_reduce: AllReduce | None = None) -> dict[str, Any]:
        """End of training: ``composition.json``, then ``status done``; CompositionMismatch (status failed) if the
        consumed mix is not the request, or the run stopped before ``train.max_iters``."""
        doc, problems = self.composition(all_reduce)
        if self.iterations != self.config.train.max_iters:
            problems.append(f"trained {self.iterations} iterations, the run asks for {self.config.train.max_iters}")
            doc["matches_request"], doc["problems"] = False, problems
        if self.writer:
            self.run.write_json("composition.json", doc)
            if problems:
                self.run.set_status("failed", "CompositionMismatch: " + "; ".join(problems[:3]))
            else:
                self.run.set_status("done", f"{self.iterations} iterations")
            self.close()
        if problems:
            raise CompositionMismatch("consumed mix differs from the requested mix: " + "; ".join(problems[:3]))
        return doc

    def fail(self, reason: str) -> None:
        """Rank 0: mark the run failed (e.g. the trainer raised) and release the run directory."""
        if self.writer and self.run.opened:
            self.run.set_status("failed", reason.replace("\n", " "))
        self.close()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        self._lock.release()

    def test_scorer(self) -> TestScorer:
        """A scorer over the run config's test split (see :class:`TestScorer`)."""
        return TestScorer(self.mixed)

    def write_metrics(self, scorer: TestScorer, iteration: int | None = None,
                      checkpoint: str | None = None) -> dict[str, Any]:
        """Write ``metrics.json`` and ``confusion.npz`` from the scored test predictions (rank 0; after finish)."""
        from proveseg.evaluate.runner import write_results

        cfg = self.config
        selection = "best_on_val" if cfg.evaluation.val else "final"
        extra: dict[str, object] = {
            "split": "test", "checkpoint": checkpoint, "model": cfg.model.name, "strategy": cfg.strategy,
            "weights_sha256": file_sha256(checkpoint) if checkpoint and Path(checkpoint).is_file() else None,
            "selection": selection, "selection_metric": cfg.train.best_metric if cfg.evaluation.val else None,
            "weights": "raw", "trainer": self.trainer}
        return write_results(self.run.root, scorer.result(), self.mixed.class_set, cfg.evaluation.n_boot,
                             self.iterations if iteration is None else iteration, extra)


def _torch_all_reduce(array: np.ndarray) -> np.ndarray:
    """Sum over the ranks of the initialised ``torch.distributed`` group (on CPU: gloo; NCCL needs the GPU)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("a plan for several ranks needs an initialised torch.distributed process group")
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()
