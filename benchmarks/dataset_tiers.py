"""Normalized scores of the quality tiers on every tabletop family, through ``collect``.

Each tier is collected like a user would (reference returns measured in the same call:
random policy = 0, expert = 100); the table shows the D4RL normalized score (x100) of
the collected episodes and the medium tier's expert noise.

    python benchmarks/dataset_tiers.py --episodes 30 --out benchmarks/results/dataset_tiers.md
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from embodied_rl.datasets import TIERS, collect
from embodied_rl.datasets.tiers import MEDIUM_NOISE

FAMILIES = ("reach", "push", "push-next-to", "pick", "place", "stack")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=30, help="episodes per tier")
    parser.add_argument("--reference-episodes", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="erl-tiers-"))
    header = "| task | medium noise | " + " | ".join(TIERS) + " | ref min | ref max |"
    lines = [header, "|---|---:|" + "---:|" * (len(TIERS) + 2)]
    start = time.perf_counter()
    try:
        for family in FAMILIES:
            scores, refs = [], (None, None)
            for tier in TIERS:
                result = collect(
                    f"tabletop/{family}-v0", tier, episodes=args.episodes, workers=args.workers,
                    out=root, reference_episodes=args.reference_episodes, progress=False,
                )  # fmt: skip
                scores.append(result.normalized_score)
                refs = (result.ref_min_score, result.ref_max_score)
            noise = MEDIUM_NOISE[family.replace("-", "_")]
            cells = " | ".join(f"{s:.0f}" for s in scores)
            lines.append(f"| {family} | {noise} | {cells} | {refs[0]:.2f} | {refs[1]:.2f} |")
            print(lines[-1], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    intro = (
        f"Normalized score (D4RL formula, x100) of {args.episodes} collected episodes per "
        f"tier; reference returns from {args.reference_episodes} random and "
        f"{args.reference_episodes} expert episodes on the same configuration (sparse "
        f"reward, state observations); {time.perf_counter() - start:.0f} s with "
        f"{args.workers} workers."
    )
    text = intro + "\n\n" + "\n".join(lines)
    print("\n" + text)
    if args.out:
        command = (
            f"python benchmarks/dataset_tiers.py --episodes {args.episodes} "
            f"--reference-episodes {args.reference_episodes} --workers {args.workers} "
            f"--out {args.out}"
        )
        Path(args.out).write_text(f"Command: `{command}`\n\n{text}\n")


if __name__ == "__main__":
    main()
