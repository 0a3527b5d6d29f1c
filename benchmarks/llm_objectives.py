"""Several objectives (helpful, harmless, concise): the Pareto front of user weights, at
inference time (best-of-N re-ranking) and at training time (PPO-RLHF on the weighted reward),
and a hard safety constraint against folding harmlessness into the reward.

The demo's SFT policy is trained on the objectives' demonstrator (``objectives_task_config``:
harsh words in 30% of negative adjectives, no length bias); one reward model per objective
(from the SFT model, InstructGPT-style) on ``--pairs`` comparisons of that objective's
Bradley-Terry annotator, normalised to mean 0, std 1 on held-out demonstrations. Held-out
prompts (the test split) are answered by:

- best-of-``--n`` re-ranked by the weighted sum of the three reward models, for every weight
  vector on the simplex grid of step 1/4 (one set of samples, re-ranked per weight), and by
  the weighted *oracles* (the ceiling of re-ranking with perfect reward models);
- PPO-RLHF on the weighted reward for ``--ppo-weights`` (one policy per weight);
- the hard constraint: helpful-only re-ranking, then the safety filter rewrites banned words,
  against helpful + harmless weights in the reward.

Each row reports the three oracles' means over the prompts (with standard errors); the
Pareto-optimal rows among the re-ranked ones are marked.

    python benchmarks/llm_objectives.py --out benchmarks/results/llm_objectives.md
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import llm_common  # noqa: E402


def simplex(step: float = 0.25) -> list[dict[str, float]]:
    from embodied_rl.llm.objectives import OBJECTIVES

    k = round(1 / step)
    return [
        dict(zip(OBJECTIVES, (a * step, b * step, (k - a - b) * step), strict=True))
        for a, b in itertools.product(range(k + 1), repeat=2)
        if a + b <= k
    ]


def pareto(points: np.ndarray) -> np.ndarray:
    """Mask of the rows no other row dominates (>= everywhere, > somewhere)."""
    keep = np.ones(len(points), bool)
    for i, p in enumerate(points):
        others = np.delete(points, i, axis=0)
        keep[i] = not np.any(np.all(others >= p, 1) & np.any(others > p, 1))
    return keep


def main() -> int:
    p = llm_common.parser(__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=4000, help="comparisons per objective")
    p.add_argument("--prompts", type=int, default=256, help="held-out prompts")
    p.add_argument("--n", type=int, default=16, help="best-of-n samples per prompt")
    p.add_argument("--ppo-iterations", type=int, default=40)
    p.add_argument(
        "--ppo-weights", default="1:0:0,0:1:0,0:0:1,1:1:1", help="helpful:harmless:concise,..."
    )
    p.add_argument(
        "--conditioned-iterations", type=int, default=120,
        help="PPO iterations of the weight-conditioned policy (0: skip it)",
    )  # fmt: skip
    args = p.parse_args()
    from embodied_rl.llm.best_of_n import BestOfNConfig, best_of_n
    from embodied_rl.llm.demo import SPLITS, DemoConfig, prepare_demo
    from embodied_rl.llm.evaluation import distinct_n
    from embodied_rl.llm.generation import SamplingConfig, generate
    from embodied_rl.llm.models import freeze, load_causal_lm
    from embodied_rl.llm.objectives import (
        OBJECTIVES,
        conditioned_reward,
        objective_comparisons,
        objective_scores,
        objectives_task_config,
        safety_filter,
        weighted_scores,
        weights_prompt,
    )
    from embodied_rl.llm.ppo_rlhf import PPORLHFConfig, PPORLHFTrainer
    from embodied_rl.llm.reward import RewardModel, RewardTrainer
    from embodied_rl.llm.tasks import TaskGenerator
    from embodied_rl.utils.io import write_text_atomic

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    task = objectives_task_config()
    config = DemoConfig(seed=args.seed, task=task)
    demo = prepare_demo(Path(args.work) / "objectives_demo", config, progress=not args.no_progress)
    tokenizer, sft = demo.tokenizer, freeze(demo.policy)
    train, held_out, test = (
        TaskGenerator(task, args.seed * 100 + SPLITS[s]) for s in ("train", "eval", "test")
    )

    reward_models, rm_notes = {}, []
    norm = held_out.demonstrations(1000)
    for objective in OBJECTIVES:
        pairs = objective_comparisons(train, objective, args.pairs)
        eval_pairs = objective_comparisons(held_out, objective, 500)
        rm = RewardModel.from_causal_lm(demo.policy, seed=args.seed)
        rconfig = replace(config.reward, progress=not args.no_progress, tensorboard=False)
        trainer = RewardTrainer(rm, tokenizer, rconfig)
        trainer.train(pairs)
        accuracy = trainer.evaluate(eval_pairs)["accuracy"]
        rm.normalize(tokenizer, [p for p, _ in norm], [r for _, r in norm])
        reward_models[objective] = freeze(rm)
        rm_notes.append(f"{objective} {accuracy:.0%}")

    def rm_scores(prompts, responses) -> dict[str, np.ndarray]:
        return {o: m.score(tokenizer, prompts, responses).numpy() for o, m in reward_models.items()}

    prompts = test.prompts(args.prompts)
    samples = best_of_n(sft, tokenizer, prompts, lambda p, r: torch.zeros(len(r)),
                        BestOfNConfig(n=args.n, seed=args.seed)).samples  # fmt: skip
    flat_p = [q for q in prompts for _ in range(args.n)]
    flat_r = [r for s in samples for r in s]
    oracle = {
        o: v.reshape(len(prompts), args.n) for o, v in objective_scores(flat_p, flat_r).items()
    }
    learned = {o: v.reshape(len(prompts), args.n) for o, v in rm_scores(flat_p, flat_r).items()}
    rows = np.arange(len(prompts))

    def summary(chosen: np.ndarray) -> list[str]:
        return [mean_sem(oracle[o][rows, chosen]) for o in OBJECTIVES]

    def name(w: dict[str, float]) -> str:
        return ":".join(f"{w[o]:g}" for o in OBJECTIVES)

    grid = simplex()
    picks: dict[str, np.ndarray] = {}
    table_rm, table_oracle, means = [], [], []
    for w in grid:
        chosen = weighted_scores(learned, w).argmax(-1)
        best = weighted_scores(oracle, w).argmax(-1)
        means.append([oracle[o][rows, chosen].mean() for o in OBJECTIVES])
        table_rm.append([name(w), *summary(chosen)])
        table_oracle.append([name(w), *summary(best)])
        picks[name(w)] = chosen
    front = pareto(np.array(means))
    for row, on in zip(table_rm, front, strict=True):
        row.append("yes" if on else "")
    first = np.zeros(len(prompts), int)
    sft_row = ["SFT (one sample)", *summary(first)]

    # hard constraint vs reward: helpful-only pick then the filter; helpful + harmless weights
    helpful_pick = picks["1:0:0"]
    filtered = [safety_filter(samples[i][c]) for i, c in enumerate(helpful_pick)]
    f_scores = objective_scores(prompts, filtered)
    constraint_rows = [
        ["helpful-only re-ranking", *summary(helpful_pick)],
        ["helpful-only re-ranking + safety filter (rewrite)",
         *[mean_sem(f_scores[o]) for o in OBJECTIVES]],
        ["helpful + harmless in the reward (0.5:0.5:0)", *summary(picks["0.5:0.5:0"])],
    ]  # fmt: skip
    bon_s = time.perf_counter() - started

    ppo_rows = []
    for spec in args.ppo_weights.split(","):
        values = [float(x) for x in spec.split(":")]
        w = dict(zip(OBJECTIVES, values, strict=True))

        def reward_fn(p, r, w=w):
            return torch.as_tensor(weighted_scores(rm_scores(p, r), w), dtype=torch.float32)

        policy = load_causal_lm(Path(args.work) / "objectives_demo" / "sft")
        pconfig = PPORLHFConfig(iterations=args.ppo_iterations, seed=args.seed,
                                progress=not args.no_progress, tensorboard=False)  # fmt: skip
        t0 = time.perf_counter()
        PPORLHFTrainer(policy, tokenizer, reward_fn, pconfig, reference=sft).train(
            train.prompts(2000)
        )
        generator = torch.Generator().manual_seed(args.seed)
        responses = generate(policy, tokenizer, prompts, SamplingConfig(), generator).responses
        s = objective_scores(prompts, responses)
        seconds = time.perf_counter() - t0
        scores = [mean_sem(s[o]) for o in OBJECTIVES]
        ppo_rows.append([spec, *scores, f"{distinct_n(responses, 2):.2f}",
                         f"{seconds:.0f}"])  # fmt: skip

    conditioned_rows = []
    if args.conditioned_iterations:  # one policy for every weighting: weights in the prompt
        rng = np.random.default_rng(args.seed)
        train_prompts = [weights_prompt(q, grid[int(rng.integers(len(grid)))])
                         for q in train.prompts(4000)]  # fmt: skip
        reward = conditioned_reward(rm_scores)
        policy = load_causal_lm(Path(args.work) / "objectives_demo" / "sft")
        pconfig = PPORLHFConfig(iterations=args.conditioned_iterations, seed=args.seed,
                                progress=not args.no_progress, tensorboard=False)  # fmt: skip
        t0 = time.perf_counter()
        PPORLHFTrainer(policy, tokenizer, lambda q, r: torch.as_tensor(reward(q, r)).float(),
                       pconfig, reference=sft).train(train_prompts)  # fmt: skip
        seconds = time.perf_counter() - t0
        for spec, per_weight in zip(args.ppo_weights.split(","), ppo_rows, strict=True):
            w = dict(zip(OBJECTIVES, (float(x) for x in spec.split(":")), strict=True))
            generator = torch.Generator().manual_seed(args.seed)
            conditioned = [weights_prompt(q, w) for q in prompts]
            responses = generate(
                policy, tokenizer, conditioned, SamplingConfig(), generator
            ).responses
            s = objective_scores(prompts, responses)
            conditioned_rows.append([spec, "conditioned", *[mean_sem(s[o]) for o in OBJECTIVES]])
            conditioned_rows.append([spec, "one per weight", *per_weight[1:4]])
        conditioned_note = (
            f"One policy trained with PPO-RLHF for {args.conditioned_iterations} iterations "
            f"({seconds:.0f} s) on task prompts prefixed with weights drawn from the 1/4 grid, "
            "rewarded by its own prompt's weighted reward models; against the per-weight "
            f"policies above ({args.ppo_iterations} iterations each)."
        )

    header = ["weights helpful:harmless:concise", *OBJECTIVES]
    lines = [
        "# Several objectives: helpful, harmless, concise",
        "",
        f"`python benchmarks/llm_objectives.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"SFT policy: the demo's GPT-2 (2 x 128) on {config.n_demonstrations} demonstrations of "
        f"the objectives' demonstrator; reward models (one per objective, from the SFT model, "
        f"{args.pairs} pairs each) reach held-out pair accuracy {', '.join(rm_notes)}. "
        f"{args.prompts} held-out prompts; oracle means +- standard errors (higher is better "
        f"on each). Best-of-{args.n} and the filter: {bon_s / 60:.1f} min including the demo "
        "and the reward models.",
        "",
        f"## Best-of-{args.n} re-ranked by the weighted reward models",
        "",
        llm_common.table([*header, "Pareto-optimal"], [[*sft_row, ""], *table_rm]),
        "",
        f"## Best-of-{args.n} re-ranked by the weighted oracles (the re-ranking ceiling)",
        "",
        llm_common.table(header, table_oracle),
        "",
        "## Hard constraint vs reward term",
        "",
        llm_common.table(["policy", *OBJECTIVES], constraint_rows),
        "",
        f"## PPO-RLHF on the weighted reward ({args.ppo_iterations} iterations, KL 0.1 to SFT)",
        "",
        llm_common.table([*header, "distinct-2", "s"], ppo_rows),
        "",
    ]
    if conditioned_rows:
        lines += [
            "## One weight-conditioned policy vs one policy per weight",
            "",
            conditioned_note,
            "",
            llm_common.table([header[0], "policy", *OBJECTIVES], conditioned_rows),
            "",
        ]
    lines += [
        llm_common.machine_note(),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_text_atomic(Path(args.out), text)
    return 0


def mean_sem(values: np.ndarray) -> str:
    return f"{values.mean():.3f} +- {values.std(ddof=1) / np.sqrt(len(values)):.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
