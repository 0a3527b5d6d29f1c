"""The one training loop: means, cadences, resume, callbacks and non-finite stops."""

from __future__ import annotations

import csv

import pytest

from embodied_rl.rl.errors import NonFiniteLossError
from embodied_rl.rl.loop import Callback, StopOnThreshold, TrainingLoop
from embodied_rl.utils.metrics import MetricsLogger


def logged(path) -> list[tuple[int, str, float]]:
    with open(path / "metrics.csv", newline="") as f:
        return [(int(r["step"]), r["name"], float(r["value"])) for r in csv.DictReader(f)]


def test_means_per_metric_evaluation_and_checkpoint_cadence(tmp_path):
    """Each logged mean is over the steps that reported the metric; evaluation and
    checkpoints run at their cadence and after the last step."""
    evaluated, saved = [], []

    def step(i):  # "sparse" only on even steps
        return {"loss": float(i), **({"sparse": 10.0 * i} if i % 2 == 0 else {})}

    def evaluate():
        evaluated.append(loop.step)
        return {"eval/score": float(loop.step)}

    with MetricsLogger(tmp_path, tensorboard=False) as log:
        loop = TrainingLoop(
            step, 7, log=log, log_every=3, progress=False, evaluate=evaluate, eval_every=4,
            checkpoint=lambda: saved.append(loop.step), checkpoint_every=5,
        )  # fmt: skip
        rows = loop.run()
    assert evaluated == [4, 7] and saved == [5, 7]
    assert [(r["step"], r.get("train/loss")) for r in rows] == [
        (3.0, 2.0), (4.0, None), (6.0, 5.0), (7.0, 7.0),
    ]  # fmt: skip
    assert rows[0]["train/sparse"] == 20.0 and rows[2]["train/sparse"] == 50.0  # (40+60)/2
    assert rows[3]["eval/score"] == 7.0 and "train/sparse" not in rows[3]
    assert (4, "eval/score", 4.0) in logged(tmp_path)
    assert (6, "train/sparse", 50.0) in logged(tmp_path)


def test_resume_continues_the_interrupted_interval():
    """A run cut at step 4 (log_every 3) and resumed with the loop's state logs the same
    means as one that never stopped."""

    def step(i):
        return {"loss": float(i * i)}

    straight = TrainingLoop(step, 6, log_every=3, progress=False).run()
    first = TrainingLoop(step, 4, log_every=3, progress=False)
    first.total_steps = 6  # as if interrupted after step 4 of 6
    first.step_fn = lambda i: (_ for _ in ()).throw(KeyboardInterrupt) if i == 5 else step(i)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    state = first.state_dict()
    resumed = TrainingLoop(step, 6, start=4, log_every=3, progress=False,
                           sums=state["log_sums"], counts=state["log_counts"])  # fmt: skip
    assert first.rows + resumed.run() == straight


def test_callbacks_see_every_step_and_can_stop_early():
    class Recorder(Callback):
        def __init__(self):
            self.events = []

        def on_start(self, loop):
            self.events.append("start")

        def on_step(self, loop, step, metrics):
            self.events.append(step)
            return step < 3  # stop after step 3

        def on_end(self, loop):
            self.events.append("end")

    recorder = Recorder()
    loop = TrainingLoop(lambda i: {"loss": 1.0}, 10, progress=False, callbacks=[recorder])
    rows = loop.run()
    assert recorder.events == ["start", 1, 2, 3, "end"] and loop.stopped_early
    assert rows[-1]["step"] == 3.0  # the partial interval is logged at the stop


def test_stop_on_threshold_reads_the_evaluation():
    scores = iter([0.2, 0.6, 0.97, 1.0])
    loop = TrainingLoop(
        lambda i: {"loss": 0.0}, 100, progress=False, evaluate=lambda: {"eval/success": next(scores)},
        eval_every=10, callbacks=[StopOnThreshold("eval/success", 0.95)],
    )  # fmt: skip
    loop.run()
    assert loop.step == 30 and [e["eval/success"] for e in loop.evaluations] == [0.2, 0.6, 0.97]


def test_a_non_finite_loss_stops_and_names_the_last_checkpoint():
    loop = TrainingLoop(
        lambda i: {"loss": float("nan") if i == 3 else 1.0}, 5, progress=False,
        checkpoint_note=lambda: "the last good checkpoint is step_000000002",
    )  # fmt: skip
    with pytest.raises(NonFiniteLossError, match="'loss' is nan at step 3") as error:
        loop.run()
    assert "step_000000002" in str(error.value.__cause__)

    def raising(i):  # an agent raises before its optimiser step
        raise NonFiniteLossError("critic_loss", i, float("inf"))

    with pytest.raises(NonFiniteLossError, match="critic_loss") as error:
        TrainingLoop(raising, 2, progress=False, checkpoint_note=lambda: "none yet").run()
    assert str(error.value.__cause__) == "none yet"
