"""Dataset sampling and collection throughput, next to a plain minari loop on the same data.

Issue #5 targets on one core: >= 1,000,000 state transitions/s in batches of 256 and
>= 20,000 64x64 frames/s with a history of 6.

- State data: synthetic but shaped like ``tabletop/*`` state datasets (90-d float32 state,
  4-d actions, sparse rewards, 100-step episodes), written through our Minari writer.
- Image data: 64x64 frames collected with the pick expert, written ``--image-copies`` times
  into one dataset so that it is far larger than the CPU caches.
- Baseline: ``minari.load_dataset(id).iterate_episodes()`` with each episode turned into
  torch tensors by vectorized slicing (transitions; history windows via
  ``sliding_window_view``): the plain loop a user writes without our samplers.
- Collection: episodes/s of ``collect`` with 1 and 2 workers; the start-up (spawning the
  workers, building environments) is measured apart with a 2-episode run.

torch and minari are imported inside functions: spawned workers re-import this script.

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
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from embodied_rl.datasets import Episode, collect, load_dataset, write_dataset  # noqa: E402

STATE_DIM, ACTION_DIM, LENGTH = 90, 4, 100


def synthetic_state_episodes(n_episodes: int, seed: int = 0):
    """Random-walk states, smooth actions, a success reward at the end of 60% of episodes."""
    rng = np.random.default_rng(seed)
    for e in range(n_episodes):
        state = np.cumsum(rng.normal(0, 0.01, (LENGTH + 1, STATE_DIM)), axis=0, dtype=np.float32)
        success = bool(rng.random() < 0.6)
        last, none = np.zeros(LENGTH, dtype=bool), np.zeros(LENGTH, dtype=bool)
        last[-1] = True
        rewards = np.zeros(LENGTH)
        rewards[-1] = float(success)
        yield Episode(
            observations={"state": state},
            actions=np.clip(rng.normal(0, 0.5, (LENGTH, ACTION_DIM)), -1, 1).astype(np.float32),
            rewards=rewards,
            terminations=last if success else none,
            truncations=none if success else last,
            metadata={"seed": e, "success": success},
        )


def best_time(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def sampler_rate(sampler, n_batches: int, items_per_batch: int) -> float:
    sampler.sample()  # warm-up
    return (
        n_batches
        * items_per_batch
        / best_time(lambda: [sampler.sample() for _ in range(n_batches)])
    )


def minari_rate(dataset_id: str, to_items) -> float:
    """Items/s of one pass of ``iterate_episodes`` (after a warm-up pass)."""
    import minari

    dataset = minari.load_dataset(dataset_id)
    loop = lambda: sum(to_items(ep) for ep in dataset.iterate_episodes())  # noqa: E731
    n = loop()
    return n / best_time(loop, repeats=1)


def transitions_of(ep) -> int:
    import torch

    obs = ep.observations["state"]
    batch = (
        torch.from_numpy(obs[:-1]),
        torch.from_numpy(ep.actions),
        torch.from_numpy(ep.rewards.astype(np.float32)),
        torch.from_numpy(obs[1:]),
        torch.from_numpy(ep.terminations),
    )
    return len(batch[2])


def histories_of(history: int):
    import torch

    def frames_of(ep) -> int:
        frames = ep.observations["image"][:-1]  # (T, H, W, 3)
        padded = np.concatenate([np.repeat(frames[:1], history - 1, axis=0), frames])
        windows = np.lib.stride_tricks.sliding_window_view(padded, history, axis=0)
        windows = np.ascontiguousarray(np.moveaxis(windows, -1, 1))  # (T, k, H, W, 3)
        steps = np.arange(len(frames))[:, None] + np.arange(-(history - 1), 1)
        batch = (torch.from_numpy(windows), torch.from_numpy(steps >= 0))
        return batch[0].shape[0] * history

    return frames_of


def collection_seconds(root: Path, workers: int, episodes: int, obs_mode: str) -> float:
    start = time.perf_counter()
    collect(
        "tabletop/pick-v0", "expert", episodes=episodes, workers=workers, out=root,
        dataset_id=f"bench/pick-{obs_mode}-w{workers}-n{episodes}-v0",
        env_kwargs={"obs_mode": obs_mode, "image_size": 64}, reference_episodes=0,
        progress=False,
    )  # fmt: skip
    return time.perf_counter() - start


def state_rows(root: Path, n_transitions: int) -> tuple[list[tuple], str]:
    from embodied_rl.datasets import SamplerConfig, TransitionSampler

    start = time.perf_counter()
    space = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)})
    action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
    episodes = synthetic_state_episodes(n_transitions // LENGTH)
    write_dataset(root, "bench/state-v0", episodes, space, action_space)
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    data = load_dataset("bench/state-v0")
    load_s = time.perf_counter() - start
    theirs = minari_rate("bench/state-v0", transitions_of)
    rows = []
    for n_step in (1, 3):
        sampler = TransitionSampler(data, n_step=n_step, config=SamplerConfig(batch_size=256))
        ours = sampler_rate(sampler, 2000, 256)
        label = f"state transitions, batch 256, {n_step}-step returns ({data.n_transitions:,} transitions)"
        rows.append((label, ours, theirs))
    return rows, f"State dataset: write {write_s:.1f} s, validate + checksum + load {load_s:.1f} s."


def image_rows(root: Path, episodes: int, copies: int, history: int) -> tuple[list[tuple], str]:
    from embodied_rl.datasets import HistorySampler, SamplerConfig

    collect(
        "tabletop/pick-v0", "expert", episodes=episodes, out=root, dataset_id="bench/frames-v0",
        env_kwargs={"obs_mode": "rgb", "image_size": 64}, reference_episodes=0, progress=False,
    )  # fmt: skip
    source = load_dataset("bench/frames-v0")
    many = [ep for _ in range(copies) for ep in source.episodes()]
    write_dataset(root, "bench/frames-big-v0", many, source.observation_space, source.action_space)
    start = time.perf_counter()
    data = load_dataset("bench/frames-big-v0", obs_keys=["image"])
    load_s = time.perf_counter() - start
    frames = data.observations["image"]
    sampler = HistorySampler(data, history=history, config=SamplerConfig(batch_size=64))
    ours = sampler_rate(sampler, 300, 64 * history)
    theirs = minari_rate("bench/frames-big-v0", histories_of(history))
    disk_mb = (root / "bench/frames-big-v0/data/main_data.hdf5").stat().st_size / 1e6
    label = f"64x64 frames, history {history}, batch 64 ({len(frames):,} frames)"
    note = (
        f"Image dataset: {source.n_episodes} collected episodes written {copies} times; "
        f"{disk_mb:.0f} MB on disk for {frames.nbytes / 1e6:.0f} MB of raw frames (gzip level 4); "
        f"validate + checksum + load {load_s:.1f} s."
    )
    return [(label, ours, theirs)], note


def collection_rows(root: Path, episodes: int) -> list[tuple]:
    rows = []
    for obs_mode in ("state", "rgb"):
        for workers in (1, 2):
            total = collection_seconds(root, workers, episodes, obs_mode)
            startup = collection_seconds(root, workers, workers, obs_mode)
            steady = (episodes - workers) / max(total - startup, 1e-9)
            rows.append((obs_mode, workers, episodes / total, steady, startup))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--image-episodes", type=int, default=150)
    parser.add_argument("--image-copies", type=int, default=12)
    parser.add_argument("--history", type=int, default=6)
    parser.add_argument("--collect-episodes", type=int, default=300)
    parser.add_argument("--out", default=None, help="also write the report to this Markdown file")
    args = parser.parse_args()
    import minari
    import torch

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="erl-bench-"))
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        rows, state_note = state_rows(root, args.transitions)
        more, image_note = image_rows(root, args.image_episodes, args.image_copies, args.history)
        collected = collection_rows(root, args.collect_episodes)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lines = [
        f"1 thread for sampling, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores shared with other jobs (load average "
        f"{os.getloadavg()[0]:.1f} at the end), torch {torch.__version__}, minari "
        f"{minari.__version__}; best of 3 timed runs (minari loop: one pass after a warm-up pass).",
        "",
        "| items | ours items/s | minari loop items/s | ratio |",
        "|---|---:|---:|---:|",
        *(f"| {a} | {b:,.0f} | {c:,.0f} | {b / c:.1f}x |" for a, b, c in rows + more),
        "",
        state_note,
        image_note,
        "",
        f"Collection, `tabletop/pick-v0` expert (~30 steps per episode), {args.collect_episodes} "
        "episodes, 64x64 images in rgb mode; start-up = a run of one episode per worker "
        "(spawning workers, imports, environments, assembling the dataset):",
        "",
        "| obs mode | workers | episodes/s overall | episodes/s after start-up | start-up s |",
        "|---|---:|---:|---:|---:|",
        *(f"| {m} | {w} | {r:.1f} | {s:.1f} | {u:.1f} |" for m, w, r, s, u in collected),
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        command = (
            f"python benchmarks/dataset_sampling.py --transitions {args.transitions} "
            f"--image-episodes {args.image_episodes} --image-copies {args.image_copies} "
            f"--history {args.history} --collect-episodes {args.collect_episodes} --out {args.out}"
        )
        Path(args.out).write_text(f"Command: `{command}`\n\n{text}\n")


if __name__ == "__main__":
    main()
