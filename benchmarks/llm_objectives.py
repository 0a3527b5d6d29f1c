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
- PPO-RLHF on the weighted reward for ``--ppo-weights`` (one policy per weight; ``grid``:
  every weight of the grid, the training-time front);
- the hard constraint: helpful-only re-ranking, then the safety filter rewrites banned words,
  against helpful + harmless weights in the reward; and the same during PPO-RLHF
  (``objectives.constrained_reward``): the helpful reward model scoring the *filtered* answer
  (rewrite; or reject, a banned word earning a refusal's -1), against the helpful-only and
  the 0.5:0.5:0 per-weight policies, each deployed with and without the filter;
- one weight-conditioned policy for every weighting: the SFT model fine-tuned on
  ``--conditioned-prompts`` training prompts x every grid weight, each with the weights in
  front and the best of ``--n`` SFT samples under those weights' reward models as the
  response (``objectives.weight_conditioned_examples``), then ``--conditioned-iterations`` of
  PPO on its own prompt's weighted reward; both evaluated at every grid weight against the
  per-weight policies.

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
        "--no-constrained",
        dest="constrained",
        action="store_false",
        help="skip the hard constraint during PPO (needs 1:0:0 among the weights)",
    )
    p.add_argument(
        "--ppo-weights", default="grid", help="helpful:harmless:concise,... or grid (all 15)"
    )
    p.add_argument("--conditioned-prompts", type=int, default=1000,
                   help="training prompts of the weight-conditioned SFT (0: skip it)")  # fmt: skip
    p.add_argument("--conditioned-sft-steps", type=int, default=1500)
    p.add_argument(
        "--conditioned-iterations", type=int, default=120,
        help="PPO iterations of the weight-conditioned policy after its SFT (0: none)",
    )  # fmt: skip
    p.add_argument("--plot", default=None, help="Pareto plot (PNG); default: beside --out")
    args = p.parse_args()
    from embodied_rl.llm.best_of_n import BestOfNConfig, best_of_n
    from embodied_rl.llm.demo import SPLITS, DemoConfig, prepare_demo
    from embodied_rl.llm.evaluation import distinct_n
    from embodied_rl.llm.generation import SamplingConfig, generate
    from embodied_rl.llm.models import freeze, load_causal_lm
    from embodied_rl.llm.objectives import (
        OBJECTIVES,
        conditioned_reward,
        constrained_reward,
        objective_comparisons,
        objective_scores,
        objectives_task_config,
        safety_filter,
        weight_conditioned_examples,
        weighted_scores,
        weights_prompt,
    )
    from embodied_rl.llm.ppo_rlhf import PPORLHFConfig, PPORLHFTrainer
    from embodied_rl.llm.reward import RewardModel, RewardTrainer
    from embodied_rl.llm.sft import SFTTrainer
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

    def train_prompts(n: int, stream: int) -> list[str]:
        """``n`` training prompts from their own seeded stream: a run's prompts do not depend
        on which runs came before it (the shared ``train`` generator's draws do)."""
        return TaskGenerator(task, args.seed * 100 + SPLITS["train"] + 10 * stream).prompts(n)

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

    def sample_scores(policy, weights=None, answers=None) -> dict[str, np.ndarray]:
        """Oracle scores of one sampled answer per held-out prompt (weights in front when the
        policy is weight-conditioned); the same sampling seed for every policy. ``answers``:
        a list that receives the responses."""
        generator = torch.Generator().manual_seed(args.seed)
        inputs = prompts if weights is None else [weights_prompt(q, weights) for q in prompts]
        responses = generate(policy, tokenizer, inputs, SamplingConfig(), generator).responses
        if answers is not None:
            answers.extend(responses)
        return {**objective_scores(prompts, responses), "distinct-2": distinct_n(responses, 2)}

    def ppo(reward_fn):
        """A PPO-RLHF policy from SFT on ``reward_fn``; the same prompts and seed for every
        run; returns it and its wall time."""
        policy = load_causal_lm(Path(args.work) / "objectives_demo" / "sft")
        pconfig = PPORLHFConfig(iterations=args.ppo_iterations, seed=args.seed,
                                progress=not args.no_progress, tensorboard=False)  # fmt: skip
        t0 = time.perf_counter()
        PPORLHFTrainer(policy, tokenizer, reward_fn, pconfig, reference=sft).train(
            train_prompts(2000, stream=1)
        )
        return policy, time.perf_counter() - t0

    specs = [name(w) for w in grid] if args.ppo_weights == "grid" else args.ppo_weights.split(",")
    ppo_rows, ppo_means, ppo_answers = [], {}, {}
    for spec in specs:
        w = dict(zip(OBJECTIVES, (float(x) for x in spec.split(":")), strict=True))

        def reward_fn(p, r, w=w):
            return torch.as_tensor(weighted_scores(rm_scores(p, r), w), dtype=torch.float32)

        policy, seconds = ppo(reward_fn)
        ppo_answers[spec] = []
        s = sample_scores(policy, answers=ppo_answers[spec])
        ppo_means[spec] = [float(s[o].mean()) for o in OBJECTIVES]
        ppo_rows.append([spec, *[mean_sem(s[o]) for o in OBJECTIVES], f"{s['distinct-2']:.2f}",
                         f"{seconds:.0f}"])  # fmt: skip
        print(ppo_rows[-1], flush=True)

    # the hard constraint during PPO: the helpful RM scores what the filter lets through
    constrained_rows = []
    if args.constrained and "1:0:0" in ppo_answers:

        def helpful_rm(p, r):
            return reward_models["helpful"].score(tokenizer, p, r).numpy()

        def deployed(name: str, answers: list[str]) -> None:
            for label, out in ((name, answers),
                               (f"{name}, deployed with the filter (rewrite)",
                                [safety_filter(r) for r in answers])):  # fmt: skip
                scores = objective_scores(prompts, out)
                banned = np.mean([safety_filter(r, "reject") is None for r in out])
                constrained_rows.append([label, *[mean_sem(scores[o]) for o in OBJECTIVES],
                                         f"{banned:.0%}"])  # fmt: skip
                print(constrained_rows[-1], flush=True)

        deployed("PPO on helpful (1:0:0)", ppo_answers["1:0:0"])
        for mode in ("rewrite", "reject"):
            reward = constrained_reward(helpful_rm, mode)
            policy, _ = ppo(lambda p, r, reward=reward: torch.as_tensor(reward(p, r)).float())
            answers: list[str] = []
            sample_scores(policy, answers=answers)
            deployed(f"PPO on helpful of the filtered answer ({mode})", answers)
        if "0.5:0.5:0" in ppo_answers:
            deployed("PPO on helpful + harmless (0.5:0.5:0)", ppo_answers["0.5:0.5:0"])
    ppo_front = pareto(np.array(list(ppo_means.values())))
    for row, on in zip(ppo_rows, ppo_front, strict=True):
        row.append("yes" if on else "")

    conditioned_rows, conditioned_means, conditioned_note = [], {}, ""
    if args.conditioned_prompts:  # one policy for every weighting: weights in the prompt
        t0 = time.perf_counter()
        pool_prompts = train_prompts(args.conditioned_prompts, stream=2)
        pool = best_of_n(sft, tokenizer, pool_prompts, lambda p, r: torch.zeros(len(r)),
                         BestOfNConfig(n=args.n, seed=args.seed + 1)).samples  # fmt: skip
        pool_p = [q for q in pool_prompts for _ in range(args.n)]
        pool_scores = {
            o: v.reshape(len(pool_prompts), args.n)
            for o, v in rm_scores(pool_p, [r for s in pool for r in s]).items()
        }
        examples = weight_conditioned_examples(pool_prompts, pool, pool_scores, grid)
        policy = load_causal_lm(Path(args.work) / "objectives_demo" / "sft")
        sconfig = replace(config.sft, steps=args.conditioned_sft_steps, seed=args.seed,
                          progress=not args.no_progress, tensorboard=False)  # fmt: skip
        SFTTrainer(policy, tokenizer, sconfig).train(examples)
        sft_s = time.perf_counter() - t0
        stages = {"conditioned SFT": policy}
        if args.conditioned_iterations:
            tuned = load_causal_lm(Path(args.work) / "objectives_demo" / "sft")
            tuned.load_state_dict(policy.state_dict())
            rng = np.random.default_rng(args.seed)
            ppo_prompts = [weights_prompt(q, grid[int(rng.integers(len(grid)))])
                           for q in train_prompts(4000, stream=3)]  # fmt: skip
            reward = conditioned_reward(rm_scores)
            pconfig = PPORLHFConfig(iterations=args.conditioned_iterations, seed=args.seed,
                                    progress=not args.no_progress, tensorboard=False)  # fmt: skip
            t1 = time.perf_counter()
            PPORLHFTrainer(tuned, tokenizer, lambda q, r: torch.as_tensor(reward(q, r)).float(),
                           pconfig, reference=freeze(policy)).train(ppo_prompts)  # fmt: skip
            ppo_s = time.perf_counter() - t1
            stages["conditioned SFT + PPO"] = tuned
        for stage, model in stages.items():
            for w in grid:
                s = sample_scores(model, w)
                conditioned_means.setdefault(stage, {})[name(w)] = [
                    float(s[o].mean()) for o in OBJECTIVES
                ]
        for spec in specs:
            conditioned_rows.append(
                [spec, "one PPO policy per weight", *ppo_rows[specs.index(spec)][1:4]]
            )
            for stage in stages:
                values = conditioned_means[stage].get(spec)
                if values is not None:
                    conditioned_rows.append([spec, stage, *[f"{v:.3f}" for v in values]])
        conditioned_note = (
            f"The SFT model fine-tuned ({args.conditioned_sft_steps} steps of batch "
            f"{sconfig.batch_size}) on {len(examples)} examples: {args.conditioned_prompts} "
            f"training prompts x the {len(grid)} grid weights, each with the weights in front "
            f"and, as the response, the best of the prompt's {args.n} SFT samples under those "
            f"weights' reward models ({sft_s:.0f} s with the sampling)"
            + (
                f"; then PPO-RLHF for {args.conditioned_iterations} iterations ({ppo_s:.0f} s) "
                "on prompts prefixed with grid weights, rewarded by their own weights' reward "
                "models, KL to the conditioned SFT model"
                if args.conditioned_iterations
                else ""
            )
            + ". Each weight is evaluated by prefixing it to the held-out prompts (one "
            "sample per prompt, the per-weight policies' seed); oracle means."
        )

    plot_path = Path(args.plot) if args.plot else (
        Path(args.out).with_suffix(".png") if args.out else None
    )  # fmt: skip
    if plot_path is not None:
        points = {f"best-of-{args.n} re-ranked by the RMs": np.array(means),
                  "PPO, one policy per weight": np.array(list(ppo_means.values()))}  # fmt: skip
        for stage, per_weight in conditioned_means.items():
            points[f"one weight-conditioned policy ({stage})"] = np.array(list(per_weight.values()))
        sft_point = np.array([[oracle[o][rows, first].mean() for o in OBJECTIVES]])
        plot_front(points, sft_point, plot_path)

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
        llm_common.table([*header, "distinct-2", "s", "Pareto-optimal"], ppo_rows),
        "",
    ]
    if constrained_rows:
        lines += [
            "## Hard constraint vs reward term during PPO-RLHF",
            "",
            f"{args.ppo_iterations} iterations each, the same prompts and seed as the rows "
            "above; the last column is the share of answers with a banned word.",
            "",
            llm_common.table(["policy", *OBJECTIVES, "banned"], constrained_rows),
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
    if plot_path is not None:
        lines += [f"Plot: `{plot_path.name}` (oracle means of every row above).", ""]
    lines += [
        llm_common.machine_note(),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_text_atomic(Path(args.out), text)
    return 0


def plot_front(points: dict[str, np.ndarray], sft_point: np.ndarray, path: Path) -> None:
    """Helpful against harmless and against concise, one marker style per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    markers = ["o", "s", "^", "v", "D"]
    for ax, (k, label) in zip(axes, [(1, "harmless"), (2, "concise")], strict=True):
        for (name, xy), marker in zip(points.items(), markers, strict=False):
            ax.scatter(xy[:, k], xy[:, 0], marker=marker, s=28, alpha=0.75, label=name)
        ax.scatter(sft_point[:, k], sft_point[:, 0], marker="*", s=160, c="k", label="SFT")
        ax.set_xlabel(f"{label} (oracle mean, higher is better)")
        ax.set_ylabel("helpful (oracle mean)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Helpful / harmless / concise: one point per weight of the 1/4 grid", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def mean_sem(values: np.ndarray) -> str:
    return f"{values.mean():.3f} +- {values.std(ddof=1) / np.sqrt(len(values)):.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
