"""Oracle reward vs KL(pi || pi_ref) for PPO-RLHF, DPO and best-of-N on the synthetic task
(the shape of Figure 2 of the DPO paper), as a table and a plot.

All three start from the demo's SFT policy (also the reference) and optimise the same
learnt reward signal: PPO and best-of-N the reward model, DPO the comparisons the reward
model was trained on. Each point is evaluated on the same held-out prompts: one sampled
response per prompt, its oracle score, and the Monte-Carlo KL (summed log-ratio of the
sampled tokens); best-of-N uses the analytic KL ``log N - (N - 1) / N``.

    python benchmarks/llm_frontier.py --out benchmarks/results/llm_frontier.md
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from llm_common import machine_note, parser, setup, table

from embodied_rl.llm.best_of_n import BestOfNConfig, best_of_n, best_of_n_kl
from embodied_rl.llm.dpo import DPOConfig, DPOTrainer
from embodied_rl.llm.evaluation import evaluate_policy
from embodied_rl.llm.ppo_rlhf import PPORLHFConfig, PPORLHFTrainer
from embodied_rl.llm.reward import reward_model_fn
from embodied_rl.llm.tasks import oracle_scores, response_words
from embodied_rl.utils.io import write_text_atomic


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--eval-prompts", type=int, default=256)
    p.add_argument("--ppo-betas", type=floats, default=floats("0.02,0.05,0.1,0.2,0.5"))
    p.add_argument("--ppo-iterations", type=int, default=60, help="rollouts of 64 prompts")
    p.add_argument("--dpo-betas", type=floats, default=floats("0.05,0.1,0.2,0.5,1.0"))
    p.add_argument("--dpo-steps", type=int, default=375, help="batch 16: one epoch of 6,000 pairs")
    p.add_argument("--dpo-lrs", type=floats, default=floats("1e-5,1e-4"))
    p.add_argument("--bon", type=floats, default=floats("1,2,4,8,16,32,64"))
    p.add_argument("--checkpoints", type=int, default=3, help="evaluations per PPO / DPO run")
    p.add_argument("--replot", action="store_true", help="redraw from the last run's points")
    args = p.parse_args()
    if args.replot:
        saved = json.loads((Path(args.work) / "frontier_points.json").read_text())
        plot(saved["points"], Path(args.out).with_suffix(".png"))
        write_text_atomic(
            args.out, report(args, saved["points"], saved["timings"], saved["setup_s"])
        )
        return
    demo, setup_s = setup(args)
    prompts = demo.task("test").prompts(args.eval_prompts)
    scorers = demo.scorers()
    points: list[dict] = []
    timings: dict[str, float] = {}

    def evaluate(method: str, setting: str, step: int, policy) -> None:
        result = evaluate_policy(
            policy, demo.policy, demo.tokenizer, prompts, scorers, seed=args.seed
        )
        points.append({"method": method, "setting": setting, "step": step, **result})
        print(f"{method:4s} {setting:10s} step {step:4d}: KL {result['kl']:6.2f}  oracle {result['oracle']:.3f}  "
              f"RM {result['reward']:.2f}  words {result['words']:.1f}")  # fmt: skip

    evaluate("SFT", "-", 0, demo.policy)
    start = time.perf_counter()
    points += best_of_n_points(demo, prompts, [int(n) for n in args.bon], args.seed)
    timings["best-of-N"] = time.perf_counter() - start

    start = time.perf_counter()
    rl_prompts = demo.task("rl").prompts(4096)
    for beta in args.ppo_betas:
        config = PPORLHFConfig(
            kl_coef=beta, iterations=args.ppo_iterations, seed=args.seed, progress=False
        )
        trainer = PPORLHFTrainer(
            copy.deepcopy(demo.policy), demo.tokenizer, reward_model_fn(demo.reward_model, demo.tokenizer),
            config, reference=demo.policy, value_model=copy.deepcopy(demo.reward_model),
        )  # fmt: skip
        every = max(1, args.ppo_iterations // args.checkpoints)
        for i in range(1, args.ppo_iterations + 1):
            trainer.step([rl_prompts[j % len(rl_prompts)] for j in range((i - 1) * 64, i * 64)])
            if i % every == 0 or i == args.ppo_iterations:
                evaluate("PPO", f"beta={beta:g}", i, trainer.policy)
    timings["PPO-RLHF"] = time.perf_counter() - start

    start = time.perf_counter()
    pairs = demo.task("train").comparisons(demo.config.n_comparisons)  # the reward model's data
    chunk = max(1, args.dpo_steps // args.checkpoints)
    for lr in args.dpo_lrs:
        for beta in args.dpo_betas:
            config = DPOConfig(beta=beta, steps=chunk, learning_rate=lr, seed=args.seed,
                               progress=False, tensorboard=False, log_every=chunk)  # fmt: skip
            trainer = DPOTrainer(
                copy.deepcopy(demo.policy), demo.tokenizer, config, reference=demo.policy
            )
            data = trainer.prepare(pairs)
            while trainer.step_count < args.dpo_steps:
                trainer.train(data)
                evaluate(f"DPO lr={lr:g}", f"beta={beta:g}", trainer.step_count, trainer.policy)
    timings["DPO"] = time.perf_counter() - start

    record = Path(args.work) / "frontier_points.json"  # --replot redraws from it
    write_text_atomic(
        record, json.dumps({"points": points, "timings": timings, "setup_s": setup_s})
    )
    if args.out:
        plot(points, Path(args.out).with_suffix(".png"))
        write_text_atomic(args.out, report(args, points, timings, setup_s))


def best_of_n_points(demo, prompts: list[str], ns: list[int], seed: int) -> list[dict]:
    """Best-of-N for every N from one set of max(N) samples per prompt (the first N)."""
    config = BestOfNConfig(n=max(ns), seed=seed)
    result = best_of_n(
        demo.policy,
        demo.tokenizer,
        prompts,
        reward_model_fn(demo.reward_model, demo.tokenizer),
        config,
    )
    flat_prompts = [p for p in prompts for _ in range(config.n)]
    flat = [r for samples in result.samples for r in samples]
    oracle = torch.tensor(oracle_scores(flat_prompts, flat)).view(len(prompts), config.n)
    length = torch.tensor(response_words(flat_prompts, flat)).view(len(prompts), config.n)
    out = []
    for n in ns:
        best = result.scores[:, :n].argmax(-1, keepdim=True)  # (P, 1)
        o = oracle[:, :n].gather(1, best).squeeze(1).numpy()
        out.append({
            "method": "BoN", "setting": f"N={n}", "step": 0, "kl": best_of_n_kl(n), "kl_sem": 0.0,
            "oracle": float(o.mean()), "oracle_sem": float(o.std(ddof=1) / np.sqrt(len(o))),
            "reward": result.scores[:, :n].gather(1, best).mean().item(), "reward_sem": float("nan"),
            "words": length[:, :n].gather(1, best).mean().item(), "words_sem": float("nan"),
            "response_tokens": float("nan"), "eos_rate": float("nan"),
        })  # fmt: skip
        print(f"BoN  N={n:<8d}: KL {out[-1]['kl']:6.2f}  oracle {out[-1]['oracle']:.3f}")
    return out


def plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    dpo_colors = iter(["tab:orange", "tab:red", "tab:purple", "tab:brown"])
    for method in _methods(points):
        if method == "SFT":
            continue
        marker, color = {"PPO": ("o", "tab:blue"), "BoN": ("^", "tab:green")}.get(
            method, ("s", None)
        )
        color = color or next(dpo_colors)
        settings = sorted({p["setting"] for p in points if p["method"] == method}, key=_setting_key)
        runs = [
            [p for p in points if p["method"] == method and p["setting"] == s] for s in settings
        ]
        if method == "BoN":
            runs = [[p for p in points if p["method"] == "BoN"]]
        for i, run in enumerate(runs):
            shade = 0.3 + 0.7 * (i + 1) / len(runs)
            label = (
                "best-of-N (N = 1 ... 64)" if method == "BoN" else f"{method} {run[0]['setting']}"
            )
            ax.errorbar([p["kl"] for p in run], [p["oracle"] for p in run],
                        yerr=[p["oracle_sem"] for p in run], marker=marker, color=color,
                        alpha=shade, capsize=2, markersize=4, label=label)  # fmt: skip
    sft = next(p for p in points if p["method"] == "SFT")
    ax.scatter([sft["kl"]], [sft["oracle"]], color="black", zorder=5, label="SFT (reference)")
    ax.axhline(1.5, color="gray", lw=0.8, ls="--")
    ax.text(0.1, 1.52, "oracle maximum", fontsize=7, color="gray")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=-0.1)  # Monte-Carlo KL estimates near 0 can dip slightly below it
    ax.set_xlabel("KL(pi || pi_ref) per response (nats, linear below 1, log above)")
    ax.set_ylabel("oracle score (held-out prompts)")
    ax.set_title("Oracle reward vs KL on the synthetic sentiment task")
    ax.legend(fontsize=6, ncol=2, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _methods(points: list[dict]) -> list[str]:
    return list(dict.fromkeys(p["method"] for p in points))


def _setting_key(setting: str) -> float:
    return float(setting.split("=")[1]) if "=" in setting else 0.0


def report(args, points: list[dict], timings: dict[str, float], setup_s: float) -> str:
    def final(method: str) -> list[dict]:
        runs: dict[str, dict] = {}
        for p in points:
            if p["method"] == method:
                runs[p["setting"]] = p  # the last checkpoint of each setting
        return sorted(runs.values(), key=lambda p: _setting_key(p["setting"]))

    rows = []
    for p in [q for method in _methods(points) for q in final(method)]:
        rows.append([
            p["method"], p["setting"], p["step"], f"{p['kl']:.2f} ± {p['kl_sem']:.2f}",
            f"{p['oracle']:.3f} ± {p['oracle_sem']:.3f}", p["reward"], p["words"],
        ])  # fmt: skip
    all_rows = [
        [p["method"], p["setting"], p["step"], p["kl"], p["oracle"], p["reward"], p["words"]]
        for p in points
        if p["method"] not in ("SFT", "BoN")
    ]
    header = ["method", "setting", "step", "KL (nats)", "oracle", "RM score", "words"]
    best = max((p for p in points if p["method"] not in ("SFT", "BoN")), key=lambda p: p["oracle"])
    return f"""# Oracle reward vs KL: PPO-RLHF, DPO and best-of-N

`python benchmarks/llm_frontier.py --out benchmarks/results/llm_frontier.md`

![frontier](llm_frontier.png)

Start and reference: the demo's SFT policy (GPT-2 2 x 128 trained on a mediocre writer's
demonstrations). Reward signal: the reward model of `llm_reward_model.md` (normalised; it has
learnt the annotator's length bias). PPO-RLHF: {args.ppo_iterations} rollouts of 64 prompts,
lr 3e-5, 4 epochs of minibatch 16, fixed beta, value model initialised from the reward model.
DPO: the reward model's {_n_pairs()} comparisons, batch 16, {args.dpo_steps} steps (one
epoch), at two learning rates ({", ".join(f"{lr:g}" for lr in args.dpo_lrs)}). Best-of-N: the first N of 64 samples per prompt, picked by the reward model.
Evaluation: {args.eval_prompts} held-out prompts, one sample each (± is the standard error over
prompts). Oracle maximum 1.5 (right sentiment and topic, at most 12 words); SFT: the start.

## Final point of each setting

{table(["method", "setting", "steps / iterations", "KL (nats)", "oracle", "RM score", "words"], rows)}

Highest oracle score among the trained policies: {best["method"]} {best["setting"]} at step {best["step"]}: {best["oracle"]:.3f}
with KL {best["kl"]:.2f}.

## Every checkpoint (PPO and DPO)

{table(header, all_rows)}

Time: setup (demo cache) {setup_s:.0f} s; best-of-N {timings["best-of-N"]:.0f} s; PPO-RLHF
{timings["PPO-RLHF"]:.0f} s for {len(args.ppo_betas)} betas; DPO {timings["DPO"]:.0f} s for
{len(args.dpo_betas)} betas x {len(args.dpo_lrs)} learning rates. {machine_note()}
"""


def _n_pairs() -> str:
    from embodied_rl.llm.demo import DemoConfig

    return f"{DemoConfig().n_comparisons:,}"


if __name__ == "__main__":
    main()
