import pytest
import torch
from torch import nn

from embodied_rl.agents.base import NonFiniteLossError
from embodied_rl.llm.training import IndexBatches, make_optimizer, optimizer_step, run_steps


def test_non_finite_loss_stops_before_the_weights_change():
    layer = nn.Linear(2, 1)
    before = [p.clone() for p in layer.parameters()]
    optimizer = make_optimizer(layer.parameters(), 0.1)
    loss = layer(torch.tensor([[float("nan"), 1.0]])).sum()
    with pytest.raises(NonFiniteLossError, match="'dpo' is nan at step 7"):
        optimizer_step(loss, optimizer, 1.0, step=7, name="dpo")
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))


def test_index_batches_cover_every_example_once_per_epoch():
    batches = IndexBatches(10, 5, seed=0)
    epoch = next(batches) + next(batches)
    assert sorted(epoch) == list(range(10))
    assert IndexBatches(10, 5, seed=0).__next__() == IndexBatches(10, 5, seed=0).__next__()
    with pytest.raises(ValueError, match="empty"):
        IndexBatches(0, 4)


def test_run_steps_logs_interval_means_and_evaluations(tmp_path):
    rows = run_steps(
        lambda i: {"loss": float(i)}, 4, desc="t", out=tmp_path, log_every=2, progress=False,
        tensorboard=False, evaluate=lambda: {"score": 1.0}, eval_every=4,
    )  # fmt: skip
    assert rows == [
        {"step": 2.0, "train/loss": 1.5},
        {"step": 4.0, "train/loss": 3.5, "eval/score": 1.0},
    ]
    assert (tmp_path / "metrics.csv").read_text().count("train/loss") == 2


def test_no_trainable_parameters_is_named():
    layer = nn.Linear(2, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        make_optimizer(layer.parameters(), 0.1)
