"""Feedback that keeps coming: direct RLAIF vs distilled RLAIF vs RLHF on one label budget,
and rounds of iterated (online) RLHF.

All runs start from the demo's SFT policy and train with PPO-RLHF (KL 0.1 to SFT, the same
iterations and seeds); only the reward differs:

- ``RLHF``: a reward model on ``--pairs`` comparisons of demonstrator responses labelled by
  the scripted annotator (the task's Bradley-Terry rater, length-biased like people);
- ``distilled RLAIF``: a reward model on the *same* response pairs labelled by the AI judge
  (the rule-based critic, ``llm.evaluation.critique_judge``; its ties are dropped);
- ``direct RLAIF``: the AI judge's absolute score as the reward during PPO, no reward model
  (``llm.evaluation.critique_score``: minus the problems the critic names; Lee et al. 2023's
  d-RLAIF), at one judge call per sampled response.

Iterated RLHF (``--rounds``): from the RLHF policy and reward model, each round samples two
responses per prompt for ``--round-pairs`` prompts from the *current* policy, labels them with
the annotator (``TaskGenerator.annotate``), retrains the reward model on every label so far,
and continues PPO for ``--round-iterations``; beside it, offline RLHF with the same total
labels (all from the demonstrator) and the same total PPO iterations. With
``--round-labeler judge`` the same loop is iterated RLAIF: the AI judge labels every round
(ties dropped), starting from the distilled RLAIF reward model and its labels.

Every policy is evaluated on ``--prompts`` held-out prompts (one sample each): the oracle's
mean, the win rate against SFT under the oracle judge (position-swapped, ties half, Wilson
interval), the critic's problems per response, words per response and the KL to SFT.

    python benchmarks/llm_rlaif.py --out benchmarks/results/llm_rlaif.md
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import llm_common  # noqa: E402


def main() -> int:
    p = llm_common.parser(__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=2000, help="labelled pairs per reward model")
    p.add_argument("--prompts", type=int, default=256, help="held-out prompts")
    p.add_argument("--ppo-iterations", type=int, default=60)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="PPO seeds")
    p.add_argument("--rounds", type=int, default=3, help="iterated RLHF rounds (0: skip)")
    p.add_argument("--round-pairs", type=int, default=500)
    p.add_argument("--round-iterations", type=int, default=20)
    p.add_argument("--round-labeler", default="annotator", choices=("annotator", "judge"),
                   help="who labels each round: the scripted annotator (iterated RLHF, from the "
                   "RLHF reward model) or the AI judge (iterated RLAIF, from the distilled one)")  # fmt: skip
    p.add_argument("--rounds-only", action="store_true",
                   help="skip the three rewards' PPO runs (the reward models still train)")  # fmt: skip
    args = p.parse_args()
    from embodied_rl.llm.evaluation import (
        critique_judge,
        critique_score,
        evaluate_policy,
        oracle_judge,
        win_rate,
    )
    from embodied_rl.llm.generation import SamplingConfig, generate
    from embodied_rl.llm.models import freeze, load_causal_lm
    from embodied_rl.llm.pairs import TextPair
    from embodied_rl.llm.ppo_rlhf import PPORLHFConfig, PPORLHFTrainer
    from embodied_rl.llm.reward import RewardModel, RewardTrainer, reward_model_fn
    from embodied_rl.llm.tasks import oracle_scores, response_words
    from embodied_rl.utils.io import write_text_atomic

    demo, _ = llm_common.setup(args)
    started = time.perf_counter()
    tokenizer, sft = demo.tokenizer, freeze(demo.policy)
    sft_dir = Path(args.work) / "demo" / "sft"
    train, rl, test = demo.task("train"), demo.task("rl"), demo.task("test")
    eval_pairs = demo.eval_pairs()
    prompts = test.prompts(args.prompts)
    rl_prompts = rl.prompts(4000)
    critic = critique_score(demo.config.task)
    oracle_pair_judge = oracle_judge(demo.config.task)

    def train_reward_model(pairs) -> tuple[RewardModel, dict[str, float]]:
        rm = RewardModel.from_causal_lm(demo.policy, seed=args.seed)
        config = replace(demo.config.reward, progress=not args.no_progress, tensorboard=False)
        trainer = RewardTrainer(rm, tokenizer, config)
        trainer.train(pairs)
        annotator = trainer.evaluate(eval_pairs)["accuracy"]
        # agreement with the oracle's order on the held-out pairs (oracle ties left out)
        decided = [c for c in eval_pairs if c.oracle_margin != 0]
        chosen = rm.score(tokenizer, [c.prompt for c in decided], [c.chosen for c in decided])
        rejected = rm.score(tokenizer, [c.prompt for c in decided], [c.rejected for c in decided])
        oracle_order = float(((chosen > rejected) == torch.tensor(
            [c.oracle_margin > 0 for c in decided])).float().mean())  # fmt: skip
        norm = demo.task("eval").demonstrations(1000)
        rm.normalize(tokenizer, [q for q, _ in norm], [r for _, r in norm])
        return freeze(rm), {"annotator": annotator, "oracle": oracle_order}

    def evaluate(policy, label: str, extra: dict | None = None) -> dict:
        scorers = {"oracle": lambda q, r: oracle_scores(q, r, demo.config.task),
                   "problems": lambda q, r: -critic(q, r), "words": response_words}  # fmt: skip
        out = evaluate_policy(policy, sft, tokenizer, prompts, scorers, seed=args.seed)
        generator = torch.Generator().manual_seed(args.seed)
        ours = generate(policy, tokenizer, prompts, SamplingConfig(), generator).responses
        out["win"] = win_rate(prompts, ours, baseline, oracle_pair_judge)
        return {"name": label, **out, **(extra or {})}

    generator = torch.Generator().manual_seed(args.seed)
    baseline = generate(sft, tokenizer, prompts, SamplingConfig(), generator).responses

    # ---------------------------------------------------------------- one label budget
    comparisons = train.comparisons(args.pairs)
    judge = critique_judge(demo.config.task)

    def ai_label(prompt: str, a: str, b: str) -> TextPair | None:
        """The AI judge's label of a response pair (None for a tie)."""
        verdict = judge(prompt, a, b)
        if verdict == "equal":
            return None
        return TextPair(prompt, a, b) if verdict == "a" else TextPair(prompt, b, a)

    # the same response pairs, labelled by the AI judge
    judged = [ai_label(c.prompt, c.chosen, c.rejected) for c in comparisons]
    ai_pairs = [x for x in judged if x is not None]
    ties = len(judged) - len(ai_pairs)
    agree = np.mean([judge(c.prompt, c.chosen, c.rejected) == "a" for c in comparisons])
    rm_rlhf, acc_rlhf = train_reward_model(comparisons)
    rm_ai, acc_ai = train_reward_model(ai_pairs)
    rm_s = time.perf_counter() - started

    calls = {"n": 0}

    def direct(q, r):
        calls["n"] += len(r)
        return torch.as_tensor(critic(q, r), dtype=torch.float32)

    sources = {
        "RLHF (RM on annotator labels)": reward_model_fn(rm_rlhf, tokenizer),
        "distilled RLAIF (RM on critic labels)": reward_model_fn(rm_ai, tokenizer),
        "direct RLAIF (critic score as reward)": direct,
    }
    rows = [evaluate(sft, "SFT", {"seed": "-"})]
    per_source: dict[str, list[dict]] = {}
    for name, reward in sources.items() if not args.rounds_only else ():
        for seed in args.seeds:
            policy = load_causal_lm(sft_dir)
            config = PPORLHFConfig(iterations=args.ppo_iterations, seed=seed,
                                   progress=not args.no_progress, tensorboard=False)  # fmt: skip
            t0 = time.perf_counter()
            calls["n"] = 0
            PPORLHFTrainer(policy, tokenizer, reward, config, reference=sft).train(rl_prompts)
            row = evaluate(policy, name, {"seed": seed, "s": time.perf_counter() - t0,
                                          "judge_calls": calls["n"]})  # fmt: skip
            rows.append(row)
            per_source.setdefault(name, []).append(row)
            print(name, seed, f"{row['oracle']:.3f}", row["win"], flush=True)

    # ---------------------------------------------------------------- iterated RLHF
    round_rows = []
    if args.rounds:
        seed = args.seeds[0]

        def schedule(policy, reward_models) -> None:
            """PPO in the rounds' schedule: --ppo-iterations, then --round-iterations per
            round (a new trainer each time, seed + k), one reward model per stage."""
            for k, rm in enumerate(reward_models):
                iterations = args.ppo_iterations if k == 0 else args.round_iterations
                config = PPORLHFConfig(iterations=iterations, seed=seed + k,
                                       progress=not args.no_progress, tensorboard=False)  # fmt: skip
                PPORLHFTrainer(policy, tokenizer, reward_model_fn(rm, tokenizer), config,
                               reference=sft).train(rl_prompts)  # fmt: skip

        if args.round_labeler == "annotator":  # iterated RLHF
            label, initial, rm0, acc0 = train.annotate, comparisons, rm_rlhf, acc_rlhf
        else:  # iterated RLAIF: the judge labels every round, from distilled RLAIF
            label, initial, rm0, acc0 = ai_label, ai_pairs, rm_ai, acc_ai
        policy = load_causal_lm(sft_dir)
        labels = list(initial)
        schedule(policy, [rm0])
        round_rows.append(evaluate(policy, f"round 0 (offline, {args.round_labeler} labels)",
                                   {"labels": len(labels), "rm": acc0}))  # fmt: skip
        for k in range(1, args.rounds + 1):
            asked = train.prompts(args.round_pairs)
            gen = torch.Generator().manual_seed(1000 * k + seed)
            a = generate(policy, tokenizer, asked, SamplingConfig(), gen).responses
            b = generate(policy, tokenizer, asked, SamplingConfig(), gen).responses
            fresh = [label(q, x, y) for q, x, y in zip(asked, a, b, strict=True) if x != y]
            fresh = [x for x in fresh if x is not None]
            labels += fresh
            rm, accuracy = train_reward_model(labels)
            config = PPORLHFConfig(iterations=args.round_iterations, seed=seed + k,
                                   progress=not args.no_progress, tensorboard=False)  # fmt: skip
            PPORLHFTrainer(policy, tokenizer, reward_model_fn(rm, tokenizer), config,
                           reference=sft).train(rl_prompts)  # fmt: skip
            round_rows.append(evaluate(policy, f"round {k}",
                                       {"labels": len(labels), "fresh": len(fresh), "rm": accuracy}))  # fmt: skip
            print(round_rows[-1]["name"], f"{round_rows[-1]['oracle']:.3f}", flush=True)
        # the controls: as many labels, all from the demonstrator (offline), and the same PPO
        # iterations, in the rounds' schedule and in one continuous run
        total = len(labels)
        extra = train.comparisons(total - len(initial))
        if args.round_labeler == "judge":
            extra = [x for x in (ai_label(c.prompt, c.chosen, c.rejected) for c in extra) if x]
        rm_big, acc_big = train_reward_model(extra + list(initial))
        policy = load_causal_lm(sft_dir)
        schedule(policy, [rm_big] * (args.rounds + 1))
        round_rows.append(evaluate(policy, "offline labels, the rounds' PPO schedule",
                                   {"labels": len(extra) + len(initial), "rm": acc_big}))  # fmt: skip
        policy = load_causal_lm(sft_dir)
        config = PPORLHFConfig(iterations=args.ppo_iterations + args.rounds * args.round_iterations,
                               seed=seed, progress=not args.no_progress, tensorboard=False)  # fmt: skip
        PPORLHFTrainer(policy, tokenizer, reward_model_fn(rm_big, tokenizer), config,
                       reference=sft).train(rl_prompts)  # fmt: skip
        round_rows.append(evaluate(policy, "offline labels, one continuous PPO run",
                                   {"labels": len(extra) + len(initial), "rm": acc_big}))  # fmt: skip

    minutes = (time.perf_counter() - started) / 60
    text = report(args, rows, per_source, round_rows, acc_rlhf, acc_ai, len(ai_pairs), ties,
                  float(agree), rm_s, minutes)  # fmt: skip
    print(text)
    if args.out:
        write_text_atomic(Path(args.out), text)
    return 0


def fmt_win(win) -> str:
    low, high = win.interval
    return f"{win.rate:.0%} [{low:.0%}, {high:.0%}]"


def report(args, rows, per_source, round_rows, acc_rlhf, acc_ai, n_ai, ties, agree, rm_s,
           minutes) -> str:  # fmt: skip
    header = ["policy", "seed", "oracle", "win rate vs SFT (oracle judge)", "critic problems",
              "words", "KL to SFT", "judge calls", "s"]  # fmt: skip
    table = []
    for r in rows:
        table.append([
            r["name"], r["seed"], f"{r['oracle']:.3f} +- {r['oracle_sem']:.3f}", fmt_win(r["win"]),
            f"{r['problems']:.2f}", f"{r['words']:.1f}", f"{r['kl']:.2f}",
            r.get("judge_calls", "-") or "-", f"{r['s']:.0f}" if "s" in r else "-",
        ])  # fmt: skip
    summary = []
    for name, runs in per_source.items():
        oracle = np.array([r["oracle"] for r in runs])
        wins = np.array([r["win"].rate for r in runs])
        spread = f" +- {oracle.std(ddof=1):.3f}" if len(runs) > 1 else ""
        summary.append([name, len(runs), f"{oracle.mean():.3f}{spread}",
                        f"{wins.mean():.0%} ({', '.join(f'{w:.0%}' for w in wins)})",
                        f"{np.mean([r['kl'] for r in runs]):.2f}"])  # fmt: skip
    lines = [
        "# Direct RLAIF, distilled RLAIF and RLHF; iterated RLHF",
        "",
        f"`python benchmarks/llm_rlaif.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"The demo's SFT policy (GPT-2 2 x 128). One label budget: {args.pairs} response pairs "
        f"of the demonstrator; the annotator's labels train the RLHF reward model (held-out "
        f"accuracy against the annotator {acc_rlhf['annotator']:.0%}, against the oracle's "
        f"order {acc_rlhf['oracle']:.0%}); the critic labels the same pairs ({ties} ties "
        f"dropped, {n_ai} kept; it agrees with the annotator on {agree:.0%} of all pairs) for "
        f"the distilled RLAIF reward model ({acc_ai['annotator']:.0%} / {acc_ai['oracle']:.0%}). "
        f"Reward models: {rm_s / 60:.1f} min. PPO-RLHF {args.ppo_iterations} iterations of 64 "
        f"prompts, KL 0.1 to SFT, seeds {args.seeds}; {args.prompts} held-out prompts, one "
        "sample each; oracle mean +- standard error over prompts.",
        "",
        "## Per run",
        "",
        llm_common.table(header, table),
        "",
        "## Over seeds (oracle mean +- std over seeds; win rates per seed)",
        "",
        llm_common.table(["reward", "seeds", "oracle", "win rate vs SFT", "KL"], summary),
        "",
    ]
    if round_rows:
        lines += [
            f"## Iterated {'RLHF' if args.round_labeler == 'annotator' else 'RLAIF'} "
            f"({args.rounds} rounds of {args.round_pairs} on-policy pairs labelled by the "
            f"{args.round_labeler}, {args.round_iterations} PPO iterations each, seed "
            f"{args.seeds[0]})",
            "",
            llm_common.table(
                [
                    "stage",
                    "labels",
                    "RM vs annotator / oracle order",
                    "oracle",
                    "win rate vs SFT",
                    "KL to SFT",
                    "words",
                ],
                [
                    [
                        r["name"],
                        r["labels"],
                        f"{r['rm']['annotator']:.0%} / {r['rm']['oracle']:.0%}",
                        f"{r['oracle']:.3f} +- {r['oracle_sem']:.3f}",
                        fmt_win(r["win"]),
                        f"{r['kl']:.2f}",
                        f"{r['words']:.1f}",
                    ]
                    for r in round_rows
                ],
            ),  # fmt: skip
            "",
        ]
    lines += [f"Wall time {minutes:.0f} min.", "", llm_common.machine_note()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
