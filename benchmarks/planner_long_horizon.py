"""Planners over skills on the long-horizon tabletop tasks, executed by the scripted expert.

Each held-out episode (reset seeds from 1,000,000, apart from the planner's training seeds)
of ``LongHorizonTabletop`` runs in closed loop (``llm.planner.run_plan``): a planner names
the next skill among the scene's 56 candidates and ``done``, the expert executes it, the
skill's own success test says whether it is done, a failed skill is dropped and the planner
chooses again. Rows:

- ``oracle``: the episode's true steps (the expert's ceiling on these tasks);
- ``rule-based``: ``decompose`` on the instruction, each step matched to its skill by phrasing;
- ``saycan-lm``: the tiny GPT-2 fine-tuned with ``SFTTrainer`` on ``--train-episodes``
  generated decompositions of seen compositions, SayCan's argmax over the candidates (no
  affordance), with replanning; ``saycan-lm, no replan`` stops at the first failed skill;
- ``saycan-lm + affordance``: the same LM times a learned affordance, a success classifier
  (``llm.affordance``) trained on ``--affordance-episodes`` seen-split episodes' executions
  of candidate skills before and after the first step (its held-out AUC is reported).

- ``... , learned policy``: the oracle, rule-based and SayCan-LM planners with a learned
  executor in place of the expert: a state MLP trained by BC (``--policy-steps``) on the
  expert's executions of ``--policy-episodes`` seen-split long-horizon episodes (each step
  with its own task encoding in the state), acting on the environment's ``task_observation``
  of the chosen skill (``llm.planner.PolicyExecutor``).
- ``... , learned detector``: Inner Monologue's success feedback from a learned classifier
  (``llm.affordance.detector_examples`` on every step of the expert's executions in
  ``--detector-episodes`` seen-split training episodes; ``SkillAffordance.detector``) in place
  of the skill's own success test on the simulator; with the expert and with the learned
  executor (then nothing in the loop reads the simulator's success test); ``..., confirm K``
  the same, a skill ending only when the detector agrees on ``--confirm`` consecutive steps.
- ``no planner, policy given the whole task``: the same MLP and BC budget trained on the same
  expert executions with ``task_encoding="episode"`` (the state names both steps from the
  episode's start and never says which step is running), acting alone for the whole episode:
  the flat policy the issue compares a planner with, told the task exactly (in state form: no
  language grounding), so its gap to the planner rows is the value of the decomposition.

Long-horizon success on seen and unseen compositions with 95% Wilson intervals, the task's
steps done in order (the environment's count), the skills the detector judged done or failed
per episode, and the LM's per-decision accuracy against the true next skill.

    python benchmarks/planner_long_horizon.py --out benchmarks/results/planner_long_horizon.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

EVAL_SEED = 1_000_000


def paraphrases(layout) -> dict[str, str]:
    """Every phrasing of every skill on ``layout`` -> the skill's first phrasing."""
    from embodied_rl.envs.instructions import TEMPLATES
    from embodied_rl.envs.tabletop import tasks
    from embodied_rl.envs.tabletop.long_horizon import skill_specs

    out = {}
    for canonical, s in skill_specs(layout).items():
        for k in range(len(TEMPLATES[s.family])):
            spec = tasks.task_spec(layout, s.family, s.object_slot, s.target_slot, s.direction,
                                   s.fixture, k)  # fmt: skip
            out[spec.instruction] = canonical
    return out


def skill_policy(env, expert, seeds, steps: int, out: Path):
    """A state MLP trained by BC on the expert's executions of ``env``'s long-horizon
    episodes (each step's state encodes that step's task); returns it and its data's size."""
    from embodied_rl.agents import TrainerConfig, default_policy, train
    from embodied_rl.agents.trainer import seed_everything
    from embodied_rl.datasets.collect_worker import record_episode
    from embodied_rl.datasets.offline import OfflineDataset

    episodes = [record_episode(env, lambda task: (expert, "expert", 0.0), s) for s in seeds]
    data = OfflineDataset.from_episodes(episodes, env.observation_space, env.action_space)
    seed_everything(0)
    config = TrainerConfig(steps=steps, batch_size=256, seed=0, eval_episodes=0,
                           log_every=1000, progress=False, tensorboard=False)  # fmt: skip
    agent, _ = train("bc", data, out, None, config, policy=default_policy("bc", data))
    agent.policy.eval()
    return agent.policy, data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-episodes", type=int, default=600)
    parser.add_argument("--sft-steps", type=int, default=1000)
    parser.add_argument("--episodes", type=int, default=50, help="held-out episodes per split")
    parser.add_argument("--affordance-episodes", type=int, default=400)
    parser.add_argument("--policy-episodes", type=int, default=600)
    parser.add_argument("--policy-steps", type=int, default=20000)
    parser.add_argument("--detector-episodes", type=int, default=300)
    parser.add_argument(
        "--confirm", type=int, default=2,
        help="extra rows: the learned detector must agree on this many consecutive steps",
    )  # fmt: skip
    parser.add_argument("--work", default="outputs/bench/planner_long_horizon")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from embodied_rl.envs import make, make_expert
    from embodied_rl.envs.tabletop.long_horizon import (
        LongHorizonTabletop,
        decompose,
        skill_specs,
    )
    from embodied_rl.evaluation.rollout import run_episode
    from embodied_rl.evaluation.transfer import wilson_interval
    from embodied_rl.llm.affordance import (
        AffordanceConfig,
        affordance_examples,
        classification_metrics,
        detector_examples,
        train_affordance,
    )
    from embodied_rl.llm.models import build_causal_lm, tiny_gpt2_config
    from embodied_rl.llm.planner import (
        DONE,
        PolicyExecutor,
        SayCanPlanner,
        planner_sft_examples,
        run_plan,
    )
    from embodied_rl.llm.sft import SFTConfig, SFTTrainer
    from embodied_rl.utils.io import write_text_atomic
    from embodied_rl.utils.tokenizer import train_tokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    started = time.perf_counter()
    train_env = LongHorizonTabletop(make("tabletop/reach-v0", n_objects=4), split="seen")
    examples = planner_sft_examples(train_env, range(args.train_episodes))
    tokenizer = train_tokenizer([p + r for p, r in examples], vocab_size=600)
    model = build_causal_lm(tiny_gpt2_config(tokenizer), seed=0)
    config = SFTConfig(steps=args.sft_steps, batch_size=32, learning_rate=2e-3, max_length=128,
                       tensorboard=False, log_every=100)  # fmt: skip
    rows = SFTTrainer(model, tokenizer, config).train(examples)
    sft_s = time.perf_counter() - started
    planner = SayCanPlanner(model, tokenizer)
    aff_started = time.perf_counter()
    aff_examples = affordance_examples(train_env, make_expert(train_env),
                                       range(args.affordance_episodes))  # fmt: skip
    affordance = train_affordance(aff_examples, AffordanceConfig())
    aff_s = time.perf_counter() - aff_started
    aff_lines, det_lines = [], []
    policy_started = time.perf_counter()
    policy_env = LongHorizonTabletop(make("tabletop/reach-v0", n_objects=4), split="seen")
    skills, skill_data = skill_policy(policy_env, make_expert(policy_env),
                                      range(args.policy_episodes), args.policy_steps,
                                      Path(args.work) / "skill_policy")  # fmt: skip
    policy_s = time.perf_counter() - policy_started
    detector_started = time.perf_counter()
    det_examples = detector_examples(train_env, make_expert(train_env),
                                     range(args.detector_episodes))  # fmt: skip
    det_model = train_affordance(det_examples, AffordanceConfig())
    detector = det_model.detector()
    detector_s = time.perf_counter() - detector_started
    flat_started = time.perf_counter()
    flat_env = LongHorizonTabletop(make("tabletop/reach-v0", n_objects=4), split="seen",
                                   task_encoding="episode")  # fmt: skip
    flat, flat_data = skill_policy(flat_env, make_expert(flat_env), range(args.policy_episodes),
                                   args.policy_steps, Path(args.work) / "flat_policy")  # fmt: skip
    flat_s = time.perf_counter() - flat_started

    lines = [
        "# Planners over skills on long-horizon tabletop tasks (scripted expert or learned policy executes)",
        "",
        f"`python benchmarks/planner_long_horizon.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
        "",
        f"Planner LM: GPT-2 2 x 128, SFT {args.sft_steps} steps of batch 32 on "
        f"{len(examples)} decisions of {args.train_episodes} seen-composition episodes (final "
        f"loss {rows[-1]['train/loss']:.3f}, {sft_s:.0f} s). {args.episodes} held-out episodes "
        "per split (reset seeds from 1,000,000), 4 objects, MuJoCo, state only; 95% Wilson "
        "intervals.",
        "",
        f'Learned executor: state MLP (`default_policy("bc", ...)`), BC {args.policy_steps} '
        f"steps of batch 256 on the expert's {skill_data.n_transitions} transitions of "
        f"{args.policy_episodes} seen-split long-horizon episodes (reset seeds 0-"
        f"{args.policy_episodes - 1}; {policy_s:.0f} s with their collection). The flat "
        f"policy: the same on the same {flat_data.n_transitions} transitions with "
        f'`task_encoding="episode"` ({flat_s:.0f} s).',
        "",
        "AFFORDANCE",
        "",
        "| planner | split | success | task steps done / episode | skills done / episode "
        "| failed skills / episode | LM decisions right; wrong ones by kind |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for split in ("seen", "unseen"):
        env = LongHorizonTabletop(make("tabletop/reach-v0", n_objects=4), split=split)
        expert = make_expert(env)
        held_out = affordance_examples(env, expert, range(EVAL_SEED, EVAL_SEED + args.episodes))
        m = classification_metrics(affordance.probabilities(held_out.scene, held_out.skill),
                                   held_out.success)  # fmt: skip
        det_held_out = detector_examples(env, expert,
                                         range(EVAL_SEED, EVAL_SEED + args.episodes))  # fmt: skip
        d = classification_metrics(det_model.probabilities(det_held_out.scene,
                                                           det_held_out.skill),
                                   det_held_out.success)  # fmt: skip
        det_lines.append(
            f"{split}: {len(det_held_out)} steps of the held-out episodes' executions, "
            f"{d['base_rate']:.0%} done; accuracy {d['accuracy']:.1%}, ROC AUC {d['auc']:.3f}, "
            f"Brier {d['brier']:.3f}"
        )
        aff_lines.append(
            f"{split}: {len(held_out)} executions of the held-out episodes, success rate "
            f"{m['base_rate']:.0%}; classifier accuracy {m['accuracy']:.0%}, ROC AUC "
            f"{m['auc']:.2f}, Brier {m['brier']:.3f}"
        )
        with_affordance = SayCanPlanner(model, tokenizer, affordance=affordance.for_env(env))

        def oracle(task, done, options, env=env):
            step = [*env.canonical_steps, DONE][min(len(done), 2)]
            return step if step in options else DONE

        def rule_based(task, done, options, env=env):
            table = paraphrases(env.layout)
            steps = [table.get(s, DONE) for s in decompose(task)] + [DONE]
            step = steps[min(len(done), len(steps) - 1)]
            return step if step in options else DONE

        decisions = {"right": 0, "n": 0}

        def saycan(task, done, options, env=env, decisions=decisions, planner=planner):
            choice = planner.next_skill(task, done, options)
            truth = ([*env.canonical_steps, DONE])[min(len(done), 2)]
            decisions["right"] += choice == truth
            decisions["n"] += 1
            if choice != truth:  # what the LM got wrong
                specs = skill_specs(env.layout)
                if DONE in (choice, truth):
                    kind = "early done" if choice == DONE else "a skill after the last"
                elif specs[choice].family != specs[truth].family:
                    kind = "wrong skill family"
                else:
                    kind = "right family, wrong object or argument"
                decisions[kind] = decisions.get(kind, 0) + 1
            return choice

        def saycan_affordance(task, done, options, saycan=saycan, planner=with_affordance):
            return saycan(task, done, options, planner=planner)

        learned = PolicyExecutor(env, skills)
        variants = [("oracle", oracle, True, expert, None),
                    ("rule-based", rule_based, True, expert, None),
                    ("saycan-lm", saycan, True, expert, None),
                    ("saycan-lm, no replan", saycan, False, expert, None),
                    ("saycan-lm + affordance", saycan_affordance, True, expert, None),
                    ("oracle, learned policy", oracle, True, learned, None),
                    ("rule-based, learned policy", rule_based, True, learned, None),
                    ("saycan-lm, learned policy", saycan, True, learned, None),
                    ("oracle, learned detector", oracle, True, expert, detector),
                    ("saycan-lm, learned detector", saycan, True, expert, detector),
                    ("oracle, learned policy + detector", oracle, True, learned,
                     detector)]  # fmt: skip
        variants = [(*v, 1) for v in variants]  # the detector's confirm: 1, run_plan's default
        if args.confirm > 1:
            variants += [
                (f"oracle, learned detector, confirm {args.confirm}", oracle, True, expert,
                 detector, args.confirm),
                (f"oracle, learned policy + detector, confirm {args.confirm}", oracle, True,
                 learned, detector, args.confirm),
            ]  # fmt: skip
        for name, choose, replan, executor, detects, confirm in variants:
            decisions.clear()
            decisions.update(right=0, n=0)
            wins = steps = done = failed = 0
            for i in range(args.episodes):
                env.reset(seed=EVAL_SEED + i)
                result = run_plan(env, choose, executor, replan=replan, detector=detects,
                                  confirm=confirm)  # fmt: skip
                wins += result.success
                done += len(result.done)
                failed += len(result.failed)
                steps += env.completed
            lo, hi = wilson_interval(wins, args.episodes)
            lm = "-"
            if name.startswith("saycan"):
                errors = {k: v for k, v in decisions.items() if k not in ("right", "n")}
                lm = f"{decisions['right']}/{decisions['n']}" + "".join(
                    f"; {k} {v}" for k, v in sorted(errors.items())
                )
            lines.append(
                f"| {name} | {split} | {wins}/{args.episodes} = {wins / args.episodes:.0%} "
                f"[{lo:.0%}, {hi:.0%}] | {steps / args.episodes:.2f} | "
                f"{done / args.episodes:.2f} | {failed / args.episodes:.2f} | {lm} |"
            )
            print(lines[-1], flush=True)
        flat_env = LongHorizonTabletop(make("tabletop/reach-v0", n_objects=4), split=split,
                                       task_encoding="episode")  # fmt: skip
        wins = steps = 0
        for i in range(args.episodes):
            wins += run_episode(flat_env, flat, EVAL_SEED + i).success
            steps += flat_env.completed
        lo, hi = wilson_interval(wins, args.episodes)
        lines.append(
            f"| no planner, policy given the whole task | {split} | {wins}/{args.episodes} = "
            f"{wins / args.episodes:.0%} [{lo:.0%}, {hi:.0%}] | {steps / args.episodes:.2f} | - | - "
            "| - |"
        )
        print(lines[-1], flush=True)
    i = lines.index("AFFORDANCE")
    lines[i : i + 1] = [
        f"Affordance: success classifier (MLP 2 x 256 on scene and skill features, 3000 Adam "
        f"steps of batch 256) on {len(aff_examples)} executions from "
        f"{args.affordance_episodes} seen-split training episodes (success rate "
        f"{aff_examples.success.mean():.0%}, {aff_s:.0f} s with their collection). On the "
        "held-out episodes' own executions (same protocol):",
        "",
        *[f"- {line}" for line in aff_lines],
        "",
        f"Success detector: the same classifier on `detector_features` (scene now and at the "
        f"skill's start, the named objects' relations), 3000 Adam steps of batch 256 on "
        f"{len(det_examples)} steps of the expert's executions in {args.detector_episodes} "
        f"seen-split training episodes ({det_examples.success.mean():.0%} done, "
        f"{detector_s:.0f} s with their collection). Per step, on the held-out episodes:",
        "",
        *[f"- {line}" for line in det_lines],
    ]
    lines += ["", f"Wall time {(time.perf_counter() - started) / 60:.1f} min."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        write_text_atomic(Path(args.out), text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
