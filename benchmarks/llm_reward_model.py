"""Reward model on the synthetic sentiment task: held-out pairwise accuracy, agreement with the
oracle, and the length flaw it learns from the length-biased annotator (against a control
reward model trained on an unbiased annotator's labels, same budget).

    python benchmarks/llm_reward_model.py --out benchmarks/results/llm_reward_model.md
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from llm_common import machine_note, parser, setup, table

from embodied_rl.llm.demo import SPLITS, oracle_agreement
from embodied_rl.llm.reward import RewardModel, RewardTrainer
from embodied_rl.llm.tasks import NEGATIVE, POSITIVE, TaskGenerator, oracle_scores, words
from embodied_rl.utils.io import write_text_atomic

N_EXTRA = (0, 2, 4, 6, 8, 10, 12)


def padded_responses(prompts: list[str], n_extra: int) -> list[str]:
    """A perfect answer with ``n_extra`` more adjectives of the right sentiment
    (" the hotel was great and lovely and ...")."""
    out = []
    for prompt in prompts:
        positive = "positive" in prompt
        pool = POSITIVE if positive else NEGATIVE
        topic = prompt.rsplit(" ", 1)[-1].rstrip(":")
        extra = "".join(f" and {pool[i % len(pool)]}" for i in range(1, n_extra // 2 + 1))
        out.append(f" the {topic} was {pool[0]}{extra}.")
    return out


def length_probe(reward_model, tokenizer, prompts) -> list[list[object]]:
    rows = []
    for n in N_EXTRA:
        responses = padded_responses(prompts, n)
        rm = reward_model.score(tokenizer, prompts, responses).mean().item()
        oracle = float(np.mean(oracle_scores(prompts, responses)))
        rows.append([len(words(responses[0])), rm, oracle])
    return rows


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    demo, setup_s = setup(args)
    tokenizer, config = demo.tokenizer, demo.config
    prompts = demo.task("test").prompts(64)
    biased_probe = length_probe(demo.reward_model, tokenizer, prompts)

    # control: the same recipe on labels of an annotator without the length bias
    start = time.perf_counter()
    unbiased_task = dataclasses.replace(config.task, length_bias=0.0)
    train = TaskGenerator(unbiased_task, config.seed * 100 + SPLITS["train"])
    held_out = TaskGenerator(unbiased_task, config.seed * 100 + SPLITS["eval"])
    control = RewardModel.from_causal_lm(demo.policy, seed=config.seed)
    reward_config = dataclasses.replace(
        config.reward, progress=not args.no_progress, tensorboard=False
    )
    trainer = RewardTrainer(control, tokenizer, reward_config)
    control_pairs = held_out.comparisons(config.n_eval_comparisons)
    trainer.train(train.comparisons(config.n_comparisons))
    control_metrics = trainer.evaluate(control_pairs)
    control_metrics.update(oracle_agreement(control, tokenizer, control_pairs))
    demos = held_out.demonstrations(config.n_normalize)
    control.normalize(tokenizer, [p for p, _ in demos], [r for _, r in demos])
    control_probe = length_probe(control, tokenizer, prompts)
    control_s = time.perf_counter() - start

    m = demo.metrics
    for name, probe in (("length-biased", biased_probe), ("unbiased control", control_probe)):
        print(name, [(w, round(r, 2), round(o, 2)) for w, r, o in probe])
    print(
        f"RM held-out accuracy {m['rm_accuracy']:.3f} (annotator ceiling {m['annotator_ceiling']:.3f})"
    )
    if args.out:
        write_text_atomic(
            args.out,
            report(args, m, control_metrics, biased_probe, control_probe, setup_s, control_s),
        )


def report(args, m, control, biased_probe, control_probe, setup_s, control_s) -> str:
    summary = table(
        ["annotator", "held-out accuracy (annotator labels)", "agreement with oracle", "annotator ceiling", "annotator vs oracle"],
        [
            ["length-biased (used for RLHF)", m["rm_accuracy"], m["rm_oracle_agreement"], m["annotator_ceiling"], m["annotator_oracle_agreement"]],
            ["unbiased (control)", control["accuracy"], control["rm_oracle_agreement"], control["annotator_ceiling"], control["annotator_oracle_agreement"]],
        ],
    )  # fmt: skip
    probe = table(
        ["words", "RM score (biased)", "RM score (control)", "oracle"],
        [[b[0], b[1], c[1], b[2]] for b, c in zip(biased_probe, control_probe, strict=True)],
    )
    return f"""# Reward model on the synthetic sentiment task

`python benchmarks/llm_reward_model.py --out benchmarks/results/llm_reward_model.md`

Backbone: the SFT policy (GPT-2, 2 layers x 128, byte-level BPE trained on the task's text),
scalar head on the last non-padding token, Bradley-Terry loss from
`embodied_rl.preference.losses`, {torch.get_num_threads()} torch thread. Training: the
demo's {_n(args)} comparisons, evaluation: 1,000 held-out comparisons from another seed.
"Accuracy" counts held-out pairs where r(chosen) > r(rejected) for the annotator's (noisy)
label; the annotator's ceiling is the mean probability of its own more likely label, the
best any model can score on those labels. "Agreement with oracle" uses the oracle's order
instead (pairs the oracle ties are left out). Scores below are normalised so the
demonstrations score mean 0, std 1.

{summary}

## The length flaw

A perfect answer (" the hotel was great.") padded with more adjectives of the right
sentiment (" ... and lovely and wonderful ..."): the oracle stops rewarding it past 12 words,
the annotator's labels kept rewarding length, and so does the reward model trained on them
(mean over 64 test prompts):

{probe}

This is the flaw PPO exploits without a KL penalty (`llm_reward_hacking.md`).

Time: demo setup (SFT + reward model, or loading the cache) {setup_s:.0f} s; control reward
model {control_s:.0f} s. {machine_note()}
"""


def _n(args) -> str:
    from embodied_rl.llm.demo import DemoConfig

    return f"{DemoConfig(seed=args.seed).n_comparisons:,}"


if __name__ == "__main__":
    main()
