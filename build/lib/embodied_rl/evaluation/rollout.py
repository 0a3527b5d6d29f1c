"""Run a policy (or scripted expert) for whole episodes and summarise the outcome."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

HELD_OUT_SEED = 1_000_000_000
"""First reset seed of default evaluations. Collections reset episode ``i`` with ``seed + i``
and their reference episodes with ``seed + 1,000,000 + j``: with collection seeds below this,
a default evaluation never replays a scene of the data a policy was trained on."""


def held_out_seed(seed: int = 0) -> int:
    """First evaluation reset seed of run ``seed``: a block of 1,000 scenes per run seed."""
    if seed < 0:
        raise ValueError(f"seed={seed} must be >= 0")
    return HELD_OUT_SEED + 1_000 * seed


def split_name(results: Sequence[EpisodeResult]) -> str:
    """``seen``, ``unseen`` or ``mixed``: the instruction split of a group of episodes."""
    unseen = {r.unseen for r in results}
    return "mixed" if len(unseen) > 1 else ("unseen" if unseen == {True} else "seen")


class Policy(Protocol):
    def act(self, obs: Any) -> np.ndarray: ...


@dataclass
class EpisodeResult:
    """Outcome of one episode."""

    task: str
    instruction: str
    seed: int
    success: bool
    episode_return: float
    length: int
    unseen: bool = False
    physics_error: str | None = None
    frames: list[np.ndarray] = field(default_factory=list, repr=False)


def run_episode(
    env,
    policy: Policy | Callable[[Any], np.ndarray],
    seed: int,
    record: bool = False,
) -> EpisodeResult:
    """Roll ``policy`` out in ``env`` from ``reset(seed=seed)`` until termination or truncation.

    With ``record=True`` the env must have ``render_mode="rgb_array"``; the frames are kept.
    """
    act = policy.act if hasattr(policy, "act") else policy
    obs, info = env.reset(seed=seed)
    if hasattr(policy, "reset"):
        policy.reset()
    frames = [env.render()] if record else []
    total, length = 0.0, 0
    while True:
        obs, reward, terminated, truncated, info = env.step(act(obs))
        total += float(reward)
        length += 1
        if record:
            frames.append(env.render())
        if terminated or truncated:
            break
    return EpisodeResult(
        task=str(info.get("task", "")),
        instruction=str(info.get("instruction", "")),
        seed=seed,
        success=bool(info.get("success", False)),
        episode_return=total,
        length=length,
        unseen=bool(info.get("unseen", False)),
        physics_error=info.get("physics_error"),
        frames=frames,
    )


def run_episodes(
    env,
    policy: Policy | Callable[[Any], np.ndarray],
    n_episodes: int,
    seed: int = 0,
    record: int = 0,
    progress: bool = True,
    desc: str = "episodes",
) -> list[EpisodeResult]:
    """Run ``n_episodes`` with seeds ``seed, seed + 1, ...``; record frames of the first ``record``."""
    if n_episodes < 1:
        raise ValueError(f"n_episodes={n_episodes} must be >= 1")
    results: list[EpisodeResult] = []
    bar = tqdm(range(n_episodes), desc=desc, disable=not progress, leave=False)
    for i in bar:
        results.append(run_episode(env, policy, seed + i, record=i < record))
        bar.set_postfix(success=f"{np.mean([r.success for r in results]):.0%}")
    return results


def success_table(results: Sequence[EpisodeResult]) -> list[dict[str, Any]]:
    """Rows per task and instruction split (seen/unseen): episodes, success rate, mean return
    and length; an ``all`` row last."""
    groups: dict[tuple[str, str], list[EpisodeResult]] = defaultdict(list)
    for r in results:  # one row per task and instruction split
        groups[(r.task, split_name([r]))].append(r)
    groups[("all", split_name(results))] = list(results)
    return [
        {
            "task": task,
            "split": split,
            "episodes": len(rs),
            "success_rate": float(np.mean([r.success for r in rs])),
            "mean_return": float(np.mean([r.episode_return for r in rs])),
            "mean_length": float(np.mean([r.length for r in rs])),
        }
        for (task, split), rs in groups.items()
    ]


def format_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Render rows of :func:`success_table` as a Markdown table."""
    lines = [
        "| task | split | episodes | success | mean return | mean length |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['task']} | {row['split']} | {row['episodes']} | {row['success_rate']:.0%} | "
            f"{row['mean_return']:.2f} | {row['mean_length']:.1f} |"
        )
    return "\n".join(lines)
