"""Collect expert and medium demonstrations with 2 workers, then sample torch batches.

Writes two Minari datasets under ``--out`` (``minari.load_dataset`` reads them with
``MINARI_DATASETS_PATH=<out>``), loads both, and draws transitions with 3-step returns,
6-frame histories for a transformer policy, and 32-step segments for preference learning.

    python examples/collect_and_sample.py --out datasets --episodes 20
"""

import argparse

from embodied_rl.datasets import (
    HistorySampler,
    SamplerConfig,
    SegmentSampler,
    TransitionSampler,
    collect,
    load_dataset,
    normalized_score,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="tabletop/pick-v0")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--out", default="datasets")
    args = parser.parse_args()

    env_kwargs = {"obs_mode": "rgb+state", "image_size": 64}
    datasets = []
    for tier in ("expert", "medium"):
        result = collect(
            args.task,
            tier,
            episodes=args.episodes,
            workers=2,
            out=args.out,
            env_kwargs=env_kwargs,
            reference_episodes=5,
            overwrite=True,
        )
        print(
            f"{result.dataset_id}: success {result.success_rate:.0%}, "
            f"normalized score {result.normalized_score:.1f} -> {result.path}"
        )
        datasets.append(load_dataset(result.path))

    returns = datasets[1].episode_returns()
    print("medium episodes, normalized:", normalized_score(returns, datasets[1]).round(1))

    transitions = TransitionSampler(datasets, n_step=3, gamma=0.99)  # both datasets at once
    batch = transitions.sample()
    print(
        "transitions:", {k: tuple(v.shape) for k, v in batch["obs"].items() if hasattr(v, "shape")}
    )
    print("  instruction[0]:", batch["obs"]["instruction"][0])

    history = HistorySampler(
        datasets, history=6, config=SamplerConfig(batch_size=32, obs_keys=("image",))
    )
    batch = history.sample()
    print("history frames:", tuple(batch["obs"]["image"].shape), batch["obs"]["image"].dtype)
    print("  padded positions:", int((~batch["mask"]).sum()))

    segments = SegmentSampler(
        datasets, length=32, config=SamplerConfig(batch_size=32, obs_keys=("state",))
    )
    batch = segments.sample()
    print("segments:", tuple(batch["obs"]["state"].shape), "returns", batch["segment_return"][:4])


if __name__ == "__main__":  # the guard is required: workers are spawned processes
    main()
