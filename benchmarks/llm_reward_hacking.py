"""Reward hacking: PPO-RLHF against the length-biased reward model without a KL penalty
(beta = 0), with a fixed penalty and with an adaptive one, tracked by the oracle.

    python benchmarks/llm_reward_hacking.py --out benchmarks/results/llm_reward_hacking.md
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
from llm_common import machine_note, parser, setup, table

from embodied_rl.llm.evaluation import evaluate_policy
from embodied_rl.llm.ppo_rlhf import PPORLHFConfig, PPORLHFTrainer
from embodied_rl.llm.reward import reward_model_fn
from embodied_rl.llm.tasks import oracle_scores, response_words
from embodied_rl.utils.io import write_text_atomic

RUNS = {
    "beta = 0 (no KL penalty)": {"kl_coef": 0.0},
    "beta = 0.1 (fixed)": {"kl_coef": 0.1},
    "adaptive beta (target 4 nats)": {"kl_coef": 0.1, "kl_target": 4.0, "kl_horizon": 2_000},
}
TRACKED = ("score", "oracle", "words", "kl", "eos_rate", "kl_coef")


def rollout_metrics(prompts: list[str], responses: list[str]) -> dict[str, float]:
    """The oracle's view of each training rollout (not used for training)."""
    return {
        "oracle": float(np.mean(oracle_scores(prompts, responses))),
        "words": float(np.mean(response_words(prompts, responses))),
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=100, help="rollouts of 64 prompts per run")
    p.add_argument("--eval-prompts", type=int, default=256)
    args = p.parse_args()
    demo, setup_s = setup(args)
    rl_prompts = demo.task("rl").prompts(4096)
    test_prompts = demo.task("test").prompts(args.eval_prompts)
    curves, finals, samples, seconds = {}, {}, {}, {}
    for name, overrides in RUNS.items():
        start = time.perf_counter()
        config = PPORLHFConfig(
            iterations=args.iterations, seed=args.seed, progress=False, **overrides
        )
        trainer = PPORLHFTrainer(
            copy.deepcopy(demo.policy), demo.tokenizer, reward_model_fn(demo.reward_model, demo.tokenizer),
            config, reference=demo.policy, value_model=copy.deepcopy(demo.reward_model),
            metrics_fn=rollout_metrics,
        )  # fmt: skip
        curve = []
        for i in range(args.iterations):
            metrics = trainer.step(
                [rl_prompts[j % len(rl_prompts)] for j in range(i * 64, (i + 1) * 64)]
            )
            curve.append({k: metrics[k] for k in TRACKED})
            if (i + 1) % 10 == 0:
                print(name, i + 1, {k: round(v, 3) for k, v in curve[-1].items()})
        curves[name] = curve
        finals[name] = evaluate_policy(
            trainer.policy,
            demo.policy,
            demo.tokenizer,
            test_prompts,
            demo.scorers(),
            seed=args.seed,
        )
        rollout = trainer.rollout(test_prompts[:4]).generation
        samples[name] = list(zip(rollout.prompts, rollout.responses, strict=True))
        seconds[name] = time.perf_counter() - start
    if args.out:
        plot(curves, Path(args.out).with_suffix(".png"))
        write_text_atomic(args.out, report(args, curves, finals, samples, seconds, setup_s))


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 6), sharex=True)
    panels = [
        ("score", "reward-model score (optimised)"),
        ("oracle", "oracle score (true preference)"),
        ("words", "words per response"),
        ("kl", "KL(pi || pi_ref) per response (nats)"),
    ]
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        for name, curve in curves.items():
            ax.plot(range(1, len(curve) + 1), [c[key] for c in curve], label=name)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[1, 0].set_xlabel("PPO iteration (64 prompts each)")
    axes[1, 1].set_xlabel("PPO iteration (64 prompts each)")
    axes[0, 1].axhline(1.5, color="gray", lw=0.8, ls="--")
    axes[1, 0].axhline(12, color="gray", lw=0.8, ls="--")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("PPO-RLHF on a length-biased reward model", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(args, curves, finals, samples, seconds, setup_s) -> str:
    marks = sorted({1, *range(20, args.iterations + 1, 20), args.iterations})
    sections = []
    for name, curve in curves.items():
        rows = [[i, *(curve[i - 1][k] for k in TRACKED)] for i in marks]
        text = "\n".join(f"- `{p}` -> `{r}`" for p, r in samples[name])
        sections.append(
            f"### {name}\n\n{table(['iteration', 'RM score', 'oracle', 'words', 'KL', 'EOS rate', 'beta'], rows)}\n\n"
            f"Samples after training:\n\n{text}\n"
        )
    final_rows = [
        [
            name,
            f["reward"],
            f["oracle"],
            f["words"],
            f"{f['kl']:.2f} ± {f['kl_sem']:.2f}",
            f["eos_rate"],
        ]
        for name, f in finals.items()
    ]
    timing = ", ".join(f"{name}: {s:.0f} s" for name, s in seconds.items())
    return f"""# Reward hacking: PPO-RLHF with and without the KL penalty

`python benchmarks/llm_reward_hacking.py --out benchmarks/results/llm_reward_hacking.md`

![curves](llm_reward_hacking.png)

The reward model (`llm_reward_model.md`) learnt the annotator's taste for longer answers;
the oracle penalises every word past 12. Every run starts from the same SFT policy with the
same seed and PPO settings (64 prompts per iteration, 4 epochs of minibatch 16, lr 3e-5,
value model initialised from the reward model); only the KL coefficient differs. The
tables track the training rollouts (the oracle is only watched, never optimised).

## After {args.iterations} iterations, on {args.eval_prompts} held-out prompts

{table(["run", "RM score", "oracle", "words", "KL (nats)", "EOS rate"], final_rows)}

## Training curves

{chr(10).join(sections)}
Time: setup (demo cache) {setup_s:.0f} s; {timing}. {machine_note()}
"""


if __name__ == "__main__":
    main()
