"""Step options from the train config: what each device accepts, and when train accuracy is measured."""

from __future__ import annotations

import pytest
import torch

from proveseg.config import TrainConfig
from proveseg.train.step import StepOptions


def test_bf16_and_channels_last_run_on_cpu_fp16_is_refused() -> None:
    cpu = torch.device("cpu")
    opts = StepOptions.from_config(TrainConfig(amp="bf16", channels_last=True), cpu)
    assert opts.amp_dtype == torch.bfloat16 and opts.channels_last
    with opts.autocast():
        out = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert out.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        StepOptions.from_config(TrainConfig(amp="fp16"), cpu)


def test_train_accuracy_only_on_logged_iterations() -> None:
    opts = StepOptions.from_config(TrainConfig(max_iters=25, log_interval=10), torch.device("cpu"))
    assert [i for i in range(1, 26) if opts.logged(i)] == [10, 20, 25]
