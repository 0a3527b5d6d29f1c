"""InstructGPT's pipeline and its alternatives on the offline synthetic task, on a CPU.

SFT -> reward model -> PPO-RLHF with a KL penalty, next to DPO on the same comparisons and
best-of-N sampling; each policy is scored by the task's oracle and its KL to the SFT policy.
Smaller than the benchmarks (a few minutes on one core).

python examples/llm_rlhf.py [--out outputs/llm_example]

Every trained model is saved under --out: ppo/policy (policy + value heads), dpo/model
(a transformers directory: load_causal_lm or AutoModelForCausalLM.from_pretrained read it).
"""

from __future__ import annotations

import argparse
import copy

import torch

from embodied_rl.llm.best_of_n import BestOfNConfig, best_of_n
from embodied_rl.llm.demo import DemoConfig, prepare_demo
from embodied_rl.llm.dpo import DPOConfig, DPOTrainer
from embodied_rl.llm.evaluation import evaluate_policy
from embodied_rl.llm.models import save_causal_lm
from embodied_rl.llm.ppo_rlhf import PPORLHFConfig, PPORLHFTrainer
from embodied_rl.llm.reward import RewardConfig, reward_model_fn
from embodied_rl.llm.sft import SFTConfig
from embodied_rl.llm.tasks import oracle_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/llm_example", help="output directory")
    out = parser.parse_args().out
    torch.set_num_threads(1)
    # 1. tokenizer, SFT policy and reward model (cached in <out>/demo after the first run)
    config = DemoConfig(
        n_demonstrations=4_000, n_comparisons=4_000,
        sft=SFTConfig(steps=400, log_every=100), reward=RewardConfig(steps=500, log_every=100),
    )  # fmt: skip
    demo = prepare_demo(f"{out}/demo", config)
    print({k: round(v, 3) for k, v in demo.metrics.items()})
    sft, tokenizer, reward = (
        demo.policy,
        demo.tokenizer,
        reward_model_fn(demo.reward_model, demo.tokenizer),
    )
    prompts = demo.task("test").prompts(128)

    def report(name: str, policy) -> None:
        r = evaluate_policy(policy, sft, tokenizer, prompts, demo.scorers())
        print(
            f"{name:12s} oracle {r['oracle']:.3f}  reward {r['reward']:.2f}  KL {r['kl']:.2f}  words {r['words']:.1f}"
        )

    report("SFT", sft)

    # 2. PPO-RLHF: reward-model score minus beta * KL, value model from the reward model
    ppo = PPORLHFTrainer(
        copy.deepcopy(sft), tokenizer, reward, PPORLHFConfig(iterations=40, kl_coef=0.1),
        reference=sft, value_model=copy.deepcopy(demo.reward_model),
    )  # fmt: skip
    ppo.train(demo.task("rl").prompts(2_000), out=f"{out}/ppo")
    ppo.save(f"{out}/ppo/policy")  # safetensors + JSON; PolicyWithValue.load() reads it back
    report("PPO-RLHF", ppo.policy)

    # 3. DPO on the comparisons the reward model learnt from
    dpo = DPOTrainer(
        copy.deepcopy(sft),
        tokenizer,
        DPOConfig(beta=0.1, steps=250, learning_rate=1e-5),
        reference=sft,
    )
    dpo.train(demo.task("train").comparisons(config.n_comparisons), out=f"{out}/dpo")
    save_causal_lm(dpo.policy, f"{out}/dpo/model", tokenizer)
    report("DPO", dpo.policy)

    # 4. best-of-16 with the reward model
    best = best_of_n(sft, tokenizer, prompts, reward, BestOfNConfig(n=16))
    print(
        f"{'best-of-16':12s} oracle {sum(oracle_scores(prompts, best.responses)) / len(prompts):.3f}"
    )
    for prompt, response in list(zip(prompts, best.responses, strict=True))[:3]:
        print(f"  {prompt}{response}")


if __name__ == "__main__":
    main()
