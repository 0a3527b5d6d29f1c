"""An RT-1-style generalisation table: the tiny VLA and a state MLP, trained by BC on the same
expert demonstrations, evaluated on seen instructions, unseen instructions (held-out
colour-shape pairs), distractors (six objects on the table where training had four) and new
table and backdrop colours.

Training and the seen/unseen evaluation are ``benchmarks/vla_learning.py``'s (same datasets,
same runs, cached under ``--work``); every condition resets from the held-out seeds
(1,000,000 on), ``--eval-episodes`` per cell with 95% Wilson intervals. The state MLP reads a
vector whose size grows with the number of objects, so it has no distractor cell.

    python benchmarks/vla_generalisation.py --out benchmarks/results/vla_generalisation.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vla_learning  # noqa: E402  (the sibling benchmark: datasets, training, rollouts)

TRAINED_OBJECTS = 4
# condition -> (split, randomization pins on top of --randomization, env options)
CONDITIONS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "seen": ("seen", {}, {}),
    "unseen instructions": ("unseen", {}, {}),
    "distractors (6 objects)": ("seen", {}, {"n_objects": 6}),
    "new table and backdrop colours": (
        "seen",
        {"table_color_jitter": (0.3, 0.3), "background_color_jitter": (0.3, 0.3)},
        {},
    ),
}

FROM_CURVE = ("seen", "unseen instructions")  # measured by vla_learning.curve at the last step


def evaluate(args, variant: str, seed: int) -> dict[str, Any]:
    """Every condition for the final checkpoint of one run (cached in ``conditions.json``)."""
    from embodied_rl.policies import load_policy

    run = Path(args.work) / "runs" / f"{variant}-s{seed}{vla_learning.run_suffix(args)}"
    record = run / "conditions.json"
    cells = json.loads(record.read_text()) if record.exists() else {}
    if args.table_only:
        return cells
    policy = None
    for name, (split, pins, env_kwargs) in CONDITIONS.items():
        if name in cells or name in FROM_CURVE or (variant == "state-mlp" and env_kwargs):
            continue
        if policy is None:
            policy = load_policy(run).eval()  # the run's policy/ artifact
        randomization = {"preset": args.randomization, **pins} if pins else None
        started = time.perf_counter()
        cells[name] = vla_learning.rollouts(args, policy, split, randomization, **env_kwargs)
        print(variant, seed, name, cells[name]["success"], f"{time.perf_counter() - started:.0f} s")
        record.write_text(json.dumps(cells, indent=1))
    return cells


def report(args, cells: dict[tuple[str, int], dict[str, Any]], minutes: float) -> str:
    names = list(CONDITIONS)
    lines = [
        f"# Generalisation of the tiny VLA on {args.task} (RT-1's table, small)",
        "",
        f"`python benchmarks/vla_generalisation.py {' '.join(args.argv)}`".replace("  ", " "),
        "",
        f"BC on {args.episodes} expert demonstrations (seeds 0-{args.episodes - 1}, "
        f"{TRAINED_OBJECTS} objects, seen colour-shape pairs, randomization "
        f"`{args.randomization}`), {args.steps} steps of batch {args.batch_size}; runs and "
        "settings are `benchmarks/vla_learning.py`'s. Success on "
        f"{args.eval_episodes} held-out scenes per cell (reset seeds from "
        f"{vla_learning.EVAL_SEED:,}), 95% Wilson intervals. New colours: table and backdrop "
        "colours offset by up to 0.3 per RGB channel (training: none).",
        "",
        "| policy | seed | " + " | ".join(names) + " |",
        "|---|---:|" + "---|" * len(names),
    ]
    for (variant, seed), row in cells.items():
        values = [vla_learning.rate(row[n]) if n in row else "n/a" for n in names]
        lines.append(f"| {variant} | {seed} | " + " | ".join(values) + " |")
    lines += ["", f"Wall time of this invocation {minutes:.0f} min (finished runs are cached)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    vla_learning.add_arguments(parser, "outputs/bench/vla_generalisation", 4500)
    parser.add_argument(
        "--variants", nargs="+", default=["8px+shift+proprio+gaussian", "state-mlp"]
    )
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    args.eval_every = args.steps  # one evaluation, at the end
    from embodied_rl.utils.io import write_text_atomic

    torch.set_num_threads(1)
    started = time.perf_counter()
    data, held_out = vla_learning.training_data(args)
    cells = {}
    for variant in args.variants:
        for seed in args.seeds:
            rows = vla_learning.curve(args, variant, seed, data, held_out)
            final = next((r for r in rows if r["step"] == args.steps), None)
            if final is None:
                continue  # --table-only before the run finished
            cells[(variant, seed)] = {
                "seen": final["seen"],
                "unseen instructions": final["unseen"],
                **evaluate(args, variant, seed),
            }
    text = report(args, cells, (time.perf_counter() - started) / 60)
    print(text)
    if args.out:
        write_text_atomic(Path(args.out), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
