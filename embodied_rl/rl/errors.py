"""Errors every training loop raises the same way."""

from __future__ import annotations


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the loss and the step."""

    def __init__(self, loss: str, step: int, value: float) -> None:
        super().__init__(
            f"loss {loss!r} is {value} at step {step}; training stopped before the optimiser "
            "step (lower the learning rate, check the data for NaN, or clip rewards)"
        )
        self.loss, self.step, self.value = loss, step, value
