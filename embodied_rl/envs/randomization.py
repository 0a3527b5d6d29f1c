"""Domain randomization: presets, the wrapper, and automatic domain randomization (ADR).

``make(task_id, randomization="default")`` (or :class:`DomainRandomization` directly) samples
the parameters of :mod:`embodied_rl.envs.domain` from uniform ranges at every reset (and,
optionally, every ``every_n_steps`` steps), applies physics/visual/actuation ones through
``env.unwrapped.set_domain`` and sensor ones (observation, image and action noise, action
latency) itself, and reports the values in ``info["domain"]``.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from embodied_rl.config import CONFIG_DIR, load_yaml
from embodied_rl.envs.domain import (
    ENV_GROUPS,
    PARAMETERS,
    check_parameter_names,
    nominal_parameters,
)
from embodied_rl.utils.io import write_text_atomic

PRESETS: tuple[str, ...] = ("none", "light", "default", "heavy")
PRESET_DIR = CONFIG_DIR / "randomization"
_IMAGE_KEY_PREFIX = "image"
_VECTOR_KEYS = ("state", "proprio")


@dataclass(frozen=True)
class RandomizationConfig:
    """Uniform ranges per domain parameter; parameters not listed stay nominal."""

    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    every_n_steps: int | None = None  # also resample mid-episode every N steps (None: resets only)
    name: str = "custom"

    def __post_init__(self) -> None:
        check_parameter_names(self.ranges)
        clean = {}
        for key, bounds in self.ranges.items():
            if not isinstance(bounds, list | tuple) or len(bounds) != 2:
                raise ValueError(f"range of {key!r} must be [low, high], got {bounds!r}")
            low, high = float(bounds[0]), float(bounds[1])
            spec = PARAMETERS[key]
            if not low <= high:
                raise ValueError(f"range of {key!r} is [{low}, {high}]: low must not exceed high")
            if low < spec.lower_limit or high > spec.upper_limit:
                raise ValueError(
                    f"range of {key!r} is [{low}, {high}] but the parameter must stay within "
                    f"[{spec.lower_limit}, {spec.upper_limit}] ({spec.doc})"
                )
            clean[key] = (low, high)
        object.__setattr__(self, "ranges", clean)
        if self.every_n_steps is not None and self.every_n_steps < 1:
            raise ValueError(f"every_n_steps={self.every_n_steps} must be >= 1 or None")

    def sample(self, rng: np.random.Generator) -> dict[str, float]:
        """Every parameter: nominal, or drawn uniformly from its range (integers inclusive)."""
        params = nominal_parameters()
        for key in sorted(self.ranges):  # sorted: the draw order never depends on YAML order
            low, high = self.ranges[key]
            if PARAMETERS[key].integer:
                params[key] = float(rng.integers(round(low), round(high) + 1))
            else:
                params[key] = float(rng.uniform(low, high))
        return params


def load_preset(name_or_path: str) -> RandomizationConfig:
    """A named preset from ``embodied_rl/configs/randomization/`` or a YAML file with a ``ranges`` map."""
    path = Path(name_or_path)
    if name_or_path in PRESETS:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    elif path.suffix not in (".yaml", ".yml"):
        raise ValueError(
            f"randomization={name_or_path!r}; choose a preset {PRESETS} or a YAML file path"
        )
    if not path.is_file():
        raise FileNotFoundError(f"randomization preset file not found: {path}")
    data = load_yaml(path.read_text()) or {}
    unknown = set(data) - {"ranges", "every_n_steps"}
    if unknown:
        raise ValueError(
            f"{path}: unknown keys {sorted(unknown)}; expected 'ranges' and 'every_n_steps'"
        )
    return RandomizationConfig(
        ranges=data.get("ranges") or {}, every_n_steps=data.get("every_n_steps"), name=path.stem
    )


def resolve_randomization(spec: Any) -> RandomizationConfig | None:
    """Accept ``None``, a preset name or YAML path, a :class:`RandomizationConfig`, or a dict
    ``{"preset": "default", "friction_scale": [0.5, 2.0], "every_n_steps": 50}`` whose
    parameter entries override the preset's ranges (``None`` removes one)."""
    if spec is None or isinstance(spec, RandomizationConfig):
        return spec
    if isinstance(spec, str | os.PathLike):
        return load_preset(str(spec))
    if isinstance(spec, Mapping):
        spec = dict(spec)
        base = load_preset(spec.pop("preset", "none"))
        every = spec.pop("every_n_steps", base.every_n_steps)
        ranges = dict(base.ranges)
        for key, value in spec.items():
            if value is None:
                ranges.pop(key, None)
            else:
                ranges[key] = value
        return RandomizationConfig(
            ranges=ranges, every_n_steps=every, name=f"{base.name}+overrides"
        )
    raise TypeError(
        f"randomization must be None, a preset name, a path, a dict or a RandomizationConfig; got {type(spec).__name__}"
    )


# ---------------------------------------------------------------------------- ADR
@dataclass
class _Bound:
    low: float
    high: float
    limit_low: float
    limit_high: float
    step: float


class ADR:
    """Automatic domain randomization (OpenAI et al. 2019, arXiv:1910.07113, section 5).

    Every parameter's range starts at its nominal value and may grow to the limits in
    ``limits``. Each episode, with probability ``boundary_prob``, one (parameter, side) is
    pinned to its boundary and the episode's success is recorded for it; after
    ``buffer_size`` such episodes the side widens by ``step`` if the success rate is at
    least ``threshold_high`` and narrows if it is at most ``threshold_low``.
    """

    def __init__(
        self,
        limits: Mapping[str, tuple[float, float]],
        n_steps: int = 10,
        buffer_size: int = 10,
        threshold_high: float = 0.8,
        threshold_low: float = 0.4,
        boundary_prob: float = 0.5,
    ) -> None:
        check_parameter_names(limits)
        if not 0.0 <= threshold_low < threshold_high <= 1.0:
            raise ValueError(
                f"need 0 <= threshold_low ({threshold_low}) < threshold_high ({threshold_high}) <= 1"
            )
        if buffer_size < 1 or n_steps < 1 or not 0.0 < boundary_prob <= 1.0:
            raise ValueError("buffer_size and n_steps must be >= 1 and boundary_prob in (0, 1]")
        self.buffer_size, self.boundary_prob = buffer_size, boundary_prob
        self.threshold_high, self.threshold_low = threshold_high, threshold_low
        self.bounds: dict[str, _Bound] = {}
        for key, (low, high) in sorted(limits.items()):
            nominal = PARAMETERS[key].nominal
            nominal = min(max(nominal, low), high)
            step = max(high - nominal, nominal - low) / n_steps
            if PARAMETERS[key].integer:
                step = max(1.0, round(step))
            self.bounds[key] = _Bound(nominal, nominal, float(low), float(high), step)
        self.buffers: dict[str, list[float]] = {
            f"{k}:{side}": [] for k in self.bounds for side in ("low", "high")
        }
        self.n_updates = 0

    @classmethod
    def from_config(cls, config: RandomizationConfig, **kwargs: Any) -> ADR:
        """ADR whose outer limits are ``config``'s ranges."""
        return cls(config.ranges, **kwargs)

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {k: (b.low, b.high) for k, b in self.bounds.items()}

    def sample(self, rng: np.random.Generator) -> tuple[dict[str, float], str | None]:
        """Parameters for one episode and the probed ``"name:side"`` (or ``None``)."""
        params = RandomizationConfig(self.ranges()).sample(rng)
        probe = None
        if self.bounds and rng.uniform() < self.boundary_prob:
            key = sorted(self.bounds)[int(rng.integers(len(self.bounds)))]
            side = "low" if rng.uniform() < 0.5 else "high"
            params[key] = getattr(self.bounds[key], side)
            probe = f"{key}:{side}"
        return params, probe

    def record(self, probe: str | None, success: bool) -> None:
        """Feed the outcome of an episode sampled with ``probe``; may move that boundary."""
        if probe is None:
            return
        buffer = self.buffers[probe]
        buffer.append(float(success))
        if len(buffer) < self.buffer_size:
            return
        rate = sum(buffer) / len(buffer)
        buffer.clear()
        key, side = probe.split(":")
        b = self.bounds[key]
        nominal = min(max(PARAMETERS[key].nominal, b.limit_low), b.limit_high)
        if rate >= self.threshold_high:
            delta = b.step
        elif rate <= self.threshold_low:
            delta = -b.step
        else:
            return
        before = (b.low, b.high)
        if side == "high":
            b.high = min(max(b.high + delta, nominal), b.limit_high)
        else:
            b.low = max(min(b.low - delta, nominal), b.limit_low)
        self.n_updates += int((b.low, b.high) != before)

    def state_dict(self) -> dict[str, Any]:
        return {
            "bounds": {k: vars(b).copy() for k, b in self.bounds.items()},
            "buffers": {k: list(v) for k, v in self.buffers.items()},
            "settings": {
                "buffer_size": self.buffer_size,
                "threshold_high": self.threshold_high,
                "threshold_low": self.threshold_low,
                "boundary_prob": self.boundary_prob,
            },
            "n_updates": self.n_updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = set(self.bounds) ^ set(state["bounds"])
        if missing:
            raise ValueError(f"ADR state has different parameters than this ADR: {sorted(missing)}")
        self.bounds = {k: _Bound(**v) for k, v in state["bounds"].items()}
        self.buffers = {k: list(v) for k, v in state["buffers"].items()}
        for key, value in state["settings"].items():
            setattr(self, key, value)
        self.n_updates = int(state["n_updates"])

    def save(self, path: str | os.PathLike) -> None:
        write_text_atomic(path, json.dumps(self.state_dict(), indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ADR:
        state = json.loads(Path(path).read_text())
        adr = cls({k: (v["limit_low"], v["limit_high"]) for k, v in state["bounds"].items()})
        adr.load_state_dict(state)
        return adr


# ---------------------------------------------------------------------------- wrapper
class DomainRandomization(gym.Wrapper):
    """Sample domain parameters per episode (and every N steps), apply them, report them.

    ``info["domain"]`` holds every parameter's value for the current episode (also at each
    step, so mid-episode resampling is visible). With ``adr`` the ranges come from the ADR
    state and each episode's success updates it.
    """

    def __init__(
        self,
        env: gym.Env,
        config: RandomizationConfig | str | Mapping | None = "default",
        seed: int | None = None,
        adr: ADR | None = None,
    ) -> None:
        super().__init__(env)
        self.config = resolve_randomization(config) or RandomizationConfig(name="none")
        self.adr = adr
        env_keys = [
            k
            for k in (adr.bounds if adr else self.config.ranges)
            if PARAMETERS[k].group in ENV_GROUPS
        ]
        if env_keys and not hasattr(env.unwrapped, "set_domain"):
            raise ValueError(
                f"{type(env.unwrapped).__name__} has no simulator parameters to randomize; it supports "
                f"sensor parameters only (remove {sorted(env_keys)})"
            )
        self._rng = np.random.default_rng(seed)
        self._probe: str | None = None
        self._queue: deque[np.ndarray] = deque()
        self.domain: dict[str, float] = nominal_parameters()
        self._steps = 0

    def _sample(self) -> dict[str, float]:
        if self.adr is not None:
            params, self._probe = self.adr.sample(self._rng)
            return params
        return self.config.sample(self._rng)

    def _apply(self, params: dict[str, float]) -> None:
        self.domain = params
        if hasattr(self.env.unwrapped, "set_domain"):
            env_params = {k: v for k, v in params.items() if PARAMETERS[k].group in ENV_GROUPS}
            self.env.unwrapped.set_domain(env_params, rng=self._rng)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            # A stream of its own: the same seed gives the same parameters and the same scene.
            self._rng = np.random.default_rng([seed, 0x5EED])
        self._apply(self._sample())
        obs, info = self.env.reset(seed=seed, options=options)
        self._steps = 0
        self._queue = deque(
            np.zeros(self.action_space.shape, self.action_space.dtype) for _ in range(self.latency)
        )
        info["domain"] = dict(self.domain)
        return self._noisy(obs), info

    @property
    def latency(self) -> int:
        return int(self.domain["action_latency_steps"])

    def step(self, action):
        action = np.asarray(action, dtype=self.action_space.dtype)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"action has shape {action.shape}; this env expects {self.action_space.shape}"
            )
        if not np.isfinite(action).all():  # now, not `latency` steps later at the robot
            raise ValueError(f"action {action.tolist()} is not finite (NaN or inf)")
        noise = self.domain["action_noise_std"]
        if noise > 0:
            action = action + self._rng.normal(0.0, noise, size=action.shape).astype(action.dtype)
            action = np.clip(action, self.action_space.low, self.action_space.high)
        if self.latency > 0:  # the robot executes the command sent `latency` steps ago
            self._queue.append(action)
            action = self._queue.popleft()
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._steps += 1
        every = self.config.every_n_steps
        if every and self._steps % every == 0 and not (terminated or truncated):
            self._apply(
                {**self._sample(), "action_latency_steps": self.domain["action_latency_steps"]}
            )
        info["domain"] = dict(self.domain)
        if self.adr is not None and (terminated or truncated):
            self.adr.record(self._probe, bool(info.get("success", False)))
            self._probe = None
        return self._noisy(obs), reward, terminated, truncated, info

    def _noisy(self, obs: dict[str, Any]) -> dict[str, Any]:
        obs_std, image_std = self.domain["obs_noise_std"], self.domain["image_noise_std"]
        if obs_std <= 0 and image_std <= 0:
            return obs
        obs = dict(obs)
        for key, value in obs.items():
            if key in _VECTOR_KEYS and obs_std > 0:
                obs[key] = (value + self._rng.normal(0.0, obs_std, size=value.shape)).astype(
                    value.dtype
                )
            elif key.startswith(_IMAGE_KEY_PREFIX) and image_std > 0:
                noisy = value.astype(np.float32) + self._rng.normal(
                    0.0, image_std, size=value.shape
                )
                obs[key] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        return obs
