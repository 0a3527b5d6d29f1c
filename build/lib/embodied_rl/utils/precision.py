"""Mixed precision for the update steps: bf16 matmuls, fp32 everywhere values matter.

``precision="bf16"`` runs an agent's update under ``torch.autocast`` with bfloat16: the
hidden layers' matmuls take bf16 inputs and accumulate in fp32, which doubles the matmul
rate on a CPU with AVX512-BF16 (measured on an AMD EPYC; AMX CPUs and GPUs with bf16 support
run it too, not measured here) and halves the memory traffic of the activations. Weights, optimiser state and every loss stay fp32, and the output layers
(Q, V, the action head) run in fp32 through :func:`fp32_linear`, so a Q-value of -50 keeps
fp32's resolution instead of bf16's 0.25. ``"fp32"`` (the default) changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PRECISIONS = ("fp32", "bf16")


def check_precision(value: str) -> None:
    """Raise ``ValueError`` naming ``value`` unless it is one of :data:`PRECISIONS`."""
    if value not in PRECISIONS:
        raise ValueError(
            f"precision={value!r}; choose one of {PRECISIONS} ('bf16': bf16 autocast of the "
            "hidden layers' matmuls, fp32 weights, outputs and losses)"
        )


@functools.cache
def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` computes bf16 matmuls in hardware (AVX512-BF16 or AMX on CPU)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return True


_warned: set[str] = set()


@contextlib.contextmanager
def autocast(precision: str, device_type: str = "cpu") -> Iterator[None]:
    """bf16 autocast on ``device_type`` for ``precision="bf16"``; nothing for ``"fp32"``.

    Warns once per device type when bf16 would be emulated (slower than fp32 there)."""
    check_precision(precision)
    if precision == "fp32":
        yield
        return
    if not native_bf16(device_type) and device_type not in _warned:
        _warned.add(device_type)
        warnings.warn(
            f"precision='bf16' on a {device_type} without native bf16 matmuls (AVX512-BF16 or "
            "AMX on CPU): it is emulated and likely slower than precision='fp32'",
            RuntimeWarning,
            stacklevel=3,
        )
    with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
        yield


def fp32_linear(layer: nn.Linear, x: Tensor) -> Tensor:
    """``layer(x)`` computed in the weights' dtype even inside an autocast region (output
    layers: values and action means keep full precision; outside autocast it is ``layer(x)``)."""
    if not torch.is_autocast_enabled(x.device.type):
        return layer(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return F.linear(x.to(layer.weight.dtype), layer.weight, layer.bias)
