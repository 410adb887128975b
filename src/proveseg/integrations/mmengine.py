"""MMEngine (MMSegmentation's runner) plugin: exact per-batch mixing, its audit and its proof.

Name it in a config's ``custom_imports=dict(imports=['proveseg.integrations.mmengine'])``; it registers:

- ``ProvesegDataset`` (DATASETS): the run config's training records as MMEngine data-info dicts
  (``img_path``, ``seg_map_path``, ``dataset``, ``domain``, ``kind``, ``source``, ``proveseg_id``,
  ``proveseg_draw``) fed through the config's ``pipeline``;
- ``LoadProvesegSample`` (TRANSFORMS): loads ``img`` (BGR, HWC uint8 like MMCV's ``LoadImageFromFile``;
  the noise control's entries are drawn, not read) and ``gt_seg_map`` decoded with the run's class set;
- ``ProvesegSampler`` (DATA_SAMPLERS): yields this rank's keys in plan order, so MMEngine's default
  batching (``batch_size`` = the run config's ``data.batch_size``) gives exactly the plan's batches;
  under MMEngine's distributed launch every rank gets the same composition;
- ``ProvesegProofHook`` (HOOKS): audits every iteration from the batch's ``proveseg_id`` (in
  ``data_samples``' metainfo: add ``'proveseg_id'`` to ``PackSegInputs``' ``meta_keys``), writes
  ``log.jsonl``, stores the record in every checkpoint and writes ``composition.json`` with it, restores
  the sampler position from the checkpoint on ``resume=True`` (MMEngine's replay of the skipped
  iterations is answered without loading a batch), and finishes ``run.yaml``/``status`` at the end.

The metrics of such a run come from :class:`proveseg.api.TestScorer` (the user's own predictions).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.dataset import Compose
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import DATA_SAMPLERS, DATASETS, HOOKS, TRANSFORMS
from torch.utils.data import Dataset, Sampler

from proveseg.api import MixedData, PlanSampler, ProofRun, load_config
from proveseg.data.dataset import noise_image
from proveseg.data.decode import decode_label, load_image
from proveseg.data.plan import iter_plan

__all__ = ["LoadProvesegSample", "ProvesegDataset", "ProvesegProofHook", "ProvesegSampler", "mixed_data"]

_MIXED: dict[tuple[str, int], MixedData] = {}
_BY_TOKEN: dict[int, MixedData] = {}  # what LoadProvesegSample decodes with, by the data info's proveseg_data
ID_KEY = "proveseg_id"


def mixed_data(run_config: str | Path | dict[str, Any], world_size: int) -> MixedData:
    """The run config's :class:`~proveseg.api.MixedData`, built once per process (dataset, sampler, hook share it)."""
    cfg = load_config(run_config)
    key = (cfg.model_dump_json(), world_size)
    if key not in _MIXED:
        _MIXED[key] = MixedData(cfg, world_size)
        _BY_TOKEN[id(_MIXED[key])] = _MIXED[key]
    return _MIXED[key]


@DATASETS.register_module()
class ProvesegDataset(Dataset[dict[str, Any]]):
    """A proveseg run config's training records as MMEngine data infos, through ``pipeline``.

    Keys are the sampler's ``(global id, pass)`` pairs; ``metainfo`` holds the class names and palette.
    """

    def __init__(self, run_config: str | dict[str, Any], pipeline: Sequence[Any] = (), test_mode: bool = False) -> None:
        _, world = get_dist_info()
        self.mixed = mixed_data(run_config, world)
        first = pipeline[0] if pipeline else None
        first_type = first.get("type") if isinstance(first, dict) else type(first)
        if "noise" in set(self.mixed.records.kind.tolist()) and getattr(first_type, "__name__", first_type) != (
                "LoadProvesegSample"):
            raise ValueError("the noise control's entries are drawn, not read: the pipeline must start with "
                             "dict(type='LoadProvesegSample') (a file loader would read the original images)")
        self.pipeline = Compose(list(pipeline))
        names = self.mixed.class_set.names
        self.metainfo = {"classes": tuple(names), "palette": [list(c) for c in self.mixed.class_set.palette]}

    def __len__(self) -> int:
        return len(self.mixed.records)

    def get_data_info(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, draw = (int(key[0]), int(key[1])) if isinstance(key, tuple | list) else (int(key), 0)
        info = self.mixed.info(index)
        info.update(proveseg_data=id(self.mixed), proveseg_draw=draw, proveseg_seed=self.mixed.data.spec.seed,
                    sample_idx=index, origin=str(self.mixed.records.origin[index]), seg_fields=[])
        return info

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        return self.pipeline(self.get_data_info(key))


@TRANSFORMS.register_module()
class LoadProvesegSample:
    """``img`` (HWC uint8, BGR by default) and ``gt_seg_map`` (class ids, 255 = ignore) the way proveseg loads them."""

    def __init__(self, channel_order: str = "bgr") -> None:
        if channel_order not in ("bgr", "rgb"):
            raise ValueError(f"channel_order {channel_order!r}: expected bgr or rgb")
        self.channel_order = channel_order

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        mixed = _BY_TOKEN.get(results.get("proveseg_data", -1))
        if mixed is None:
            raise KeyError("LoadProvesegSample loads the data infos of a ProvesegDataset (no proveseg_data key)")
        if results["kind"] == "noise":
            image = noise_image(results["origin"], results["proveseg_seed"], results[ID_KEY], results["proveseg_draw"])
        else:
            image = load_image(results["img_path"])
        img = image.permute(1, 2, 0).numpy()
        results["img"] = np.ascontiguousarray(img[..., ::-1] if self.channel_order == "bgr" else img)
        results["img_shape"] = results["ori_shape"] = img.shape[:2]
        if results.get("seg_map_path"):
            results["gt_seg_map"] = decode_label(results["seg_map_path"], mixed.class_set,
                                                 label_map=mixed.records.label_map_of(int(results[ID_KEY])))
            results.setdefault("seg_fields", []).append("gt_seg_map")
        return results


@DATA_SAMPLERS.register_module()
class ProvesegSampler(Sampler[tuple[int, int]]):
    """This rank's sample keys in plan order: MMEngine's batching by ``data.batch_size`` yields the plan's batches.

    ``infinite=True`` never ends (for ``IterBasedTrainLoop``, like MMEngine's ``InfiniteSampler``); otherwise an
    epoch is ``batches_per_epoch`` batches. ``seed`` (MMEngine's) is not used: the plan's seed is ``data.seed``.
    """

    def __init__(self, dataset: ProvesegDataset, seed: int | None = None, batches_per_epoch: int | None = None,
                 infinite: bool = False) -> None:
        if not isinstance(dataset, ProvesegDataset):
            raise TypeError(f"ProvesegSampler needs a ProvesegDataset, got {type(dataset).__name__}")
        rank, _ = get_dist_info()
        self.plan: PlanSampler = dataset.mixed.batch_sampler(rank, batches_per_epoch)
        self.infinite = infinite

    def __len__(self) -> int:
        return len(self.plan) * self.plan.mixed.batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        plan = self.plan
        spec = plan.mixed.data.spec
        while True:
            stop = plan.epoch_end() if not self.infinite else plan.position + 256
            for planned in iter_plan(spec, plan.position, stop, chunk=256):
                for ids, passes in zip(planned.ids[:, plan.rank].tolist(), planned.passes[:, plan.rank].tolist(),
                                       strict=True):
                    plan.position += 1
                    yield from zip(ids, passes, strict=True)
            if not self.infinite:
                return

    def set_epoch(self, epoch: int) -> None:
        self.plan.set_epoch(epoch)


class _ResumedIterator:
    """MMEngine's IterBasedTrainLoop replays ``iter`` batches after a resume; answer those without loading any."""

    def __init__(self, fresh: Iterator[Any], skip: int) -> None:
        self.fresh, self.skip = fresh, skip

    def __iter__(self) -> _ResumedIterator:
        return self

    def __next__(self) -> Any:
        if self.skip:
            self.skip -= 1
            return None
        return next(self.fresh)


def batch_ids(data_batch: Any) -> np.ndarray:
    """The ``proveseg_id`` of every sample of a collated MMEngine batch (from ``data_samples``' metainfo)."""
    samples = data_batch.get("data_samples") if isinstance(data_batch, dict) else None
    if samples is None:
        raise KeyError("the batch has no data_samples: the pipeline must pack them (PackSegInputs or your own)")
    ids = []
    for sample in samples:
        meta = getattr(sample, "metainfo", None)
        if meta is None and isinstance(sample, dict):
            meta = sample.get("metainfo", sample)
        if meta is None or ID_KEY not in meta:
            raise KeyError(f"a data sample has no {ID_KEY!r} in its metainfo: add '{ID_KEY}' to the meta_keys of "
                           "PackSegInputs (or your packing transform)")
        ids.append(int(meta[ID_KEY]))
    return np.asarray(ids, dtype=np.int64)


@HOOKS.register_module()
class ProvesegProofHook(Hook):
    """Audit every iteration, keep the record in checkpoints, restore the sampler on resume, write the proof.

    ``output_dir``: the run directory (default: the run config's ``output_dir``); ``log_interval``: a
    ``log.jsonl`` line every N iterations (default: the run config's ``train.log_interval``).
    """

    priority = "VERY_HIGH"  # before CheckpointHook: the record is gathered before the checkpoint is written

    def __init__(self, output_dir: str | None = None, log_interval: int | None = None) -> None:
        self.output_dir, self.log_interval = output_dir, log_interval
        self.proof: ProofRun | None = None
        self.resumed = False
        self._gathered: list[dict[str, Any]] | None = None

    def _proof(self, runner: Any) -> ProofRun:
        if self.proof is None:
            dataset = runner.train_dataloader.dataset
            if not isinstance(dataset, ProvesegDataset):
                raise TypeError(f"ProvesegProofHook needs train_dataloader.dataset of type ProvesegDataset, got "
                                f"{type(dataset).__name__}")
            rank, _ = get_dist_info()
            self.proof = ProofRun(dataset.mixed, rank, trainer=_trainer_name(), max_iters=runner.max_iters,
                                  output_dir=self.output_dir)
        return self.proof

    def _sampler(self, runner: Any) -> ProvesegSampler:
        loader = runner.train_dataloader
        sampler = loader.sampler if isinstance(loader.sampler, ProvesegSampler) else getattr(
            loader.batch_sampler, "sampler", None)
        if not isinstance(sampler, ProvesegSampler):
            raise TypeError("ProvesegProofHook needs train_dataloader.sampler=dict(type='ProvesegSampler')")
        return sampler

    def after_load_checkpoint(self, runner: Any, checkpoint: dict[str, Any]) -> None:
        """Continue this rank's record from the checkpoint and put the sampler at its position."""
        record = checkpoint.get("meta", {}).get("proveseg") or checkpoint.get("proveseg")
        if record is None:
            raise KeyError("the checkpoint holds no proveseg record (saved without ProvesegProofHook)")
        rank, world = get_dist_info()
        if len(record["ranks"]) != world:
            raise ValueError(f"the checkpoint's proveseg record covers {len(record['ranks'])} ranks, this run {world}")
        proof = self._proof(runner)
        proof.load_state_dict(record["ranks"][rank])
        self._sampler(runner).plan.load_state_dict(record["ranks"][rank]["sampler"])
        self.resumed = True

    def before_train(self, runner: Any) -> None:
        loader = runner.train_dataloader
        proof = self._proof(runner)
        if loader.batch_size != proof.mixed.batch_size:
            raise ValueError(f"train_dataloader.batch_size {loader.batch_size} is not the run config's data.batch_size "
                             f"{proof.mixed.batch_size}: the plan's batches would be cut differently")
        self._sampler(runner)
        proof.start(resume=self.resumed)

    def before_train_epoch(self, runner: Any) -> None:
        loop = runner.train_loop
        if self.resumed and hasattr(loop, "dataloader_iterator") and loop.iter > 0:
            from mmengine.runner.loops import _InfiniteDataloaderIterator

            loop.dataloader_iterator = _ResumedIterator(_InfiniteDataloaderIterator(loop.dataloader), loop.iter)

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        self._proof(runner).record(batch_ids(data_batch))

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        proof = self._proof(runner)
        it = runner.iter + 1
        interval = self.log_interval or proof.config.train.log_interval
        if it % interval == 0 or it == runner.max_iters:
            record: dict[str, Any] = {"iteration": it}
            record.update({k: float(torch.as_tensor(v).detach()) for k, v in (outputs or {}).items() if _scalar(v)})
            lrs = runner.optim_wrapper.get_lr().get("lr", [])
            if lrs:
                record["lr"] = float(lrs[0])
            proof.log(record)
        if _checkpoint_due(runner, by_epoch=False):
            self._keep_for_checkpoint(proof)

    def after_train_epoch(self, runner: Any) -> None:
        if _checkpoint_due(runner, by_epoch=True):
            self._keep_for_checkpoint(self._proof(runner))

    def _keep_for_checkpoint(self, proof: ProofRun) -> None:
        """Every rank: gather the records for the checkpoint rank 0 is about to save, and write composition.json."""
        _, world = get_dist_info()
        self._gathered = all_gather_object(proof.state_dict()) if world > 1 else [proof.state_dict()]
        proof.write_composition()

    def before_save_checkpoint(self, runner: Any, checkpoint: dict[str, Any]) -> None:
        """Rank 0 (MMEngine saves there only): every rank's record, gathered by all ranks at this iteration."""
        proof = self._proof(runner)
        gathered = self._gathered
        if not gathered or gathered[0]["sampler"]["position"] != proof.batches:
            raise RuntimeError("a checkpoint outside CheckpointHook's schedule cannot hold every rank's proveseg "
                               "record")
        checkpoint.setdefault("meta", {})["proveseg"] = {"ranks": gathered}

    def after_train(self, runner: Any) -> None:
        """composition.json and status done (or failed with the mismatch); every rank takes part in the sums."""
        self._proof(runner).finish()


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float) or (isinstance(value, torch.Tensor) and value.numel() == 1)


def _checkpoint_due(runner: Any, by_epoch: bool) -> bool:
    """Whether a CheckpointHook saves now (the rule it applies), so that every rank gathers its record first."""
    for hook in runner.hooks:
        if not isinstance(hook, CheckpointHook) or hook.by_epoch != by_epoch:
            continue
        if by_epoch and (hook.every_n_epochs(runner, hook.interval, hook.save_begin)
                         or (hook.save_last and hook.is_last_train_epoch(runner))):
            return True
        if not by_epoch and (hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
                             or (hook.save_last and hook.is_last_train_iter(runner))):
            return True
    return False


def _trainer_name() -> str:
    import mmengine

    return f"mmengine {mmengine.__version__}"
