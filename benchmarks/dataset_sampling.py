"""Dataset sampling and collection throughput, next to a plain minari loop on the same data.

Issue #5 targets on one core: >= 1,000,000 state transitions/s in batches of 256 and
>= 20,000 64x64 frames/s with a history of 6.

- State data: synthetic but shaped like ``tabletop/*`` state datasets (90-d float32 state,
  4-d actions, sparse rewards, 100-step episodes), written through our Minari writer.
- Image data: collected with the pick expert at 64x64 (this also times collection with 1
  and 2 workers).
- Baseline: ``minari.load_dataset(id).iterate_episodes()`` with each episode turned into
  torch tensors by vectorized slicing (transitions; history windows via
  ``sliding_window_view``): the plain loop a user writes without our samplers.

    python benchmarks/dataset_sampling.py --out benchmarks/results/dataset_sampling.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import embodied_rl  # noqa: E402,F401  (headless GL before mujoco)

# isort: split
import minari  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from gymnasium import spaces  # noqa: E402

from embodied_rl.datasets import (  # noqa: E402
    Episode,
    HistorySampler,
    SamplerConfig,
    TransitionSampler,
    collect,
    load_dataset,
    write_dataset,
)

STATE_DIM, ACTION_DIM = 90, 4


def synthetic_state_episodes(n_episodes: int, length: int, seed: int = 0):
    """Random-walk states, smooth actions, a success reward at the end of 60% of episodes."""
    rng = np.random.default_rng(seed)
    for e in range(n_episodes):
        state = np.cumsum(rng.normal(0, 0.01, (length + 1, STATE_DIM)), axis=0, dtype=np.float32)
        success = rng.random() < 0.6
        flags, none = np.zeros(length, dtype=bool), np.zeros(length, dtype=bool)
        flags[-1] = True
        rewards = np.zeros(length)
        rewards[-1] = float(success)
        yield Episode(
            observations={"state": state},
            actions=np.clip(rng.normal(0, 0.5, (length, ACTION_DIM)), -1, 1).astype(np.float32),
            rewards=rewards,
            terminations=flags if success else none,
            truncations=none if success else flags,
            metadata={"seed": e, "success": bool(success)},
        )


def timed(fn, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def sampler_rate(sampler, n_batches: int, items_per_batch: int) -> float:
    sampler.sample()  # warm-up
    seconds = timed(lambda: [sampler.sample() for _ in range(n_batches)])
    return n_batches * items_per_batch / seconds


def minari_transitions_rate(dataset_id: str) -> float:
    dataset = minari.load_dataset(dataset_id)

    def loop() -> int:
        n = 0
        for ep in dataset.iterate_episodes():
            obs = ep.observations["state"]
            batch = (
                torch.from_numpy(obs[:-1]),
                torch.from_numpy(ep.actions),
                torch.from_numpy(ep.rewards.astype(np.float32)),
                torch.from_numpy(obs[1:]),
                torch.from_numpy(ep.terminations),
            )
            n += len(batch[2])
        return n

    n = loop()
    return n / timed(loop, repeats=1)


def minari_history_rate(dataset_id: str, history: int) -> float:
    dataset = minari.load_dataset(dataset_id)

    def loop() -> int:
        n = 0
        for ep in dataset.iterate_episodes():
            frames = ep.observations["image"][:-1]  # (T, H, W, 3)
            padded = np.concatenate([np.repeat(frames[:1], history - 1, axis=0), frames])
            windows = np.lib.stride_tricks.sliding_window_view(padded, history, axis=0)
            windows = np.ascontiguousarray(np.moveaxis(windows, -1, 1))  # (T, k, H, W, 3)
            steps = np.arange(len(frames))[:, None] + np.arange(-(history - 1), 1)
            batch = (torch.from_numpy(windows), torch.from_numpy(steps >= 0))
            n += batch[0].shape[0] * history
        return n

    n = loop()
    return n / timed(loop, repeats=1)


def collection_rate(root: Path, workers: int, episodes: int, obs_mode: str) -> tuple[float, str]:
    dataset_id = f"bench/pick-{obs_mode.replace('+', '-')}-w{workers}-v0"
    start = time.perf_counter()
    result = collect(
        "tabletop/pick-v0", "expert", episodes=episodes, workers=workers, out=root,
        dataset_id=dataset_id, env_kwargs={"obs_mode": obs_mode, "image_size": 64},
        reference_episodes=0, progress=False,
    )  # fmt: skip
    return result.n_episodes / (time.perf_counter() - start), dataset_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--image-episodes", type=int, default=150)
    parser.add_argument("--history", type=int, default=6)
    parser.add_argument("--out", default=None, help="also write the report to this Markdown file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="erl-bench-"))
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    rows: list[tuple[str, str, str, str]] = []
    try:
        length = 100
        start = time.perf_counter()
        episodes = synthetic_state_episodes(args.transitions // length, length)
        space = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)})
        action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        write_dataset(root, "bench/state-v0", episodes, space, action_space)
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        state = load_dataset("bench/state-v0")
        load_s = time.perf_counter() - start
        ours = sampler_rate(
            TransitionSampler(state, config=SamplerConfig(batch_size=256)), 2000, 256
        )
        ours_n3 = sampler_rate(
            TransitionSampler(state, n_step=3, config=SamplerConfig(batch_size=256)), 2000, 256
        )
        theirs = minari_transitions_rate("bench/state-v0")
        n = state.n_transitions
        rows += [
            (f"state transitions, batch 256 ({n:,} transitions)", f"{ours:,.0f}", f"{theirs:,.0f}", f"{ours / theirs:.1f}x"),
            ("state transitions, batch 256, 3-step returns", f"{ours_n3:,.0f}", f"{theirs:,.0f}", f"{ours_n3 / theirs:.1f}x"),
        ]  # fmt: skip
        state_note = f"write {write_s:.1f} s, validate + load {load_s:.1f} s"

        collect_rows = []
        for obs_mode in ("state", "rgb"):
            for workers in (1, 2):
                rate, image_id = collection_rate(root, workers, args.image_episodes, obs_mode)
                collect_rows.append((obs_mode, workers, rate))
        start = time.perf_counter()
        images = load_dataset(image_id, obs_keys=["image"])
        image_load_s = time.perf_counter() - start
        k = args.history
        hist = HistorySampler(images, history=k, config=SamplerConfig(batch_size=64))
        ours_frames = sampler_rate(hist, 300, 64 * k)
        theirs_frames = minari_history_rate(image_id, k)
        n_frames = len(images.observations["image"])
        rows.append(
            (f"64x64 frames, history {k}, batch 64 ({n_frames:,} frames)", f"{ours_frames:,.0f}", f"{theirs_frames:,.0f}", f"{ours_frames / theirs_frames:.1f}x")
        )  # fmt: skip
        size_mb = sum(p.stat().st_size for p in (root / image_id).rglob("*.hdf5")) / 1e6
        raw_mb = images.observations["image"].nbytes / 1e6
    finally:
        shutil.rmtree(root, ignore_errors=True)

    lines = [
        f"1 thread, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"minari {minari.__version__}; best of 3 timed runs (minari loop: one pass after a "
        "warm-up pass).",
        "",
        "| items | ours items/s | minari loop items/s | ratio |",
        "|---|---:|---:|---:|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
        f"State dataset: {state_note}. Image dataset: validate + load of the image key "
        f"{image_load_s:.1f} s; {size_mb:.1f} MB on disk for {raw_mb:.1f} MB of raw frames (gzip 4).",
        "",
        f"Collection, `tabletop/pick-v0` expert, {args.image_episodes} episodes, 64x64 images "
        "in rgb mode (process start-up and dataset assembly included):",
        "",
        "| obs mode | workers | episodes/s |",
        "|---|---:|---:|",
        *(f"| {m} | {w} | {r:.1f} |" for m, w, r in collect_rows),
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        command = (
            f"python benchmarks/dataset_sampling.py --transitions {args.transitions} "
            f"--image-episodes {args.image_episodes} --history {args.history} --out {args.out}"
        )
        Path(args.out).write_text(f"Command: `{command}`\n\n{text}\n")


if __name__ == "__main__":
    main()
