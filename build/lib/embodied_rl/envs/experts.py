"""``make_expert(env)``: the scripted expert of any environment of the toolkit."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Expert(Protocol):
    """A scripted policy: ``act(obs) -> action``; ``reset()`` between episodes;
    ``clean_action``: the noise-free action of the latest ``act`` (equal to it at noise 0)."""

    clean_action: np.ndarray

    def act(self, obs: Any) -> np.ndarray: ...

    def reset(self) -> None: ...


def make_expert(env, noise: float = 0.0, seed: int | None = None) -> Expert:
    """Return the scripted expert for ``env`` (wrapped or not).

    ``noise`` is the standard deviation of Gaussian action noise (0 = nominal expert).
    Experts read privileged simulator state from the unwrapped env, so they work in
    every observation mode.
    """
    from embodied_rl.envs.metaworld import MetaWorldEnv, MetaWorldExpert
    from embodied_rl.envs.tabletop.base import TabletopEnvBase
    from embodied_rl.envs.tabletop.experts import TabletopExpert

    base = env.unwrapped
    if isinstance(base, TabletopEnvBase):
        return TabletopExpert(base, noise=noise, seed=seed)
    if isinstance(base, MetaWorldEnv):
        return MetaWorldExpert(base, noise=noise, seed=seed)
    raise TypeError(
        f"no scripted expert for {type(base).__name__}; experts exist for the tabletop "
        "suite and Meta-World environments"
    )
