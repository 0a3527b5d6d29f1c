"""One PPO-RLHF run of 120 iterations on a reward model from a fresh draw of 3,499 demonstrator
labels, with train-time oracle means every 10 iterations (the non-collapsing control quoted
in `results/llm_rlaif.md`).

    python benchmarks/probes/rlaif_offline_control.py  # the demo cached by llm_rlaif.py
"""

import sys
from dataclasses import replace

import torch

sys.path.insert(0, "benchmarks")
from embodied_rl.llm.demo import DemoConfig, prepare_demo
from embodied_rl.llm.models import freeze, load_causal_lm
from embodied_rl.llm.ppo_rlhf import PPORLHFConfig, PPORLHFTrainer
from embodied_rl.llm.reward import RewardModel, RewardTrainer, reward_model_fn
from embodied_rl.llm.tasks import oracle_scores, response_words

torch.set_num_threads(1)
demo = prepare_demo("outputs/llm_bench/demo", DemoConfig(seed=0), progress=False)
tok, sft = demo.tokenizer, freeze(demo.policy)
train, rl = demo.task("train"), demo.task("rl")
pairs = train.comparisons(3499)
rm = RewardModel.from_causal_lm(demo.policy, seed=0)
RewardTrainer(rm, tok, replace(demo.config.reward, progress=False, tensorboard=False)).train(pairs)
norm = demo.task("eval").demonstrations(1000)
rm.normalize(tok, [q for q, _ in norm], [r for _, r in norm])
freeze(rm)
policy = load_causal_lm("outputs/llm_bench/demo/sft")


def metrics(p, r):
    o = oracle_scores(p, r)
    w = response_words(p, r)
    return {"oracle": float(sum(o) / len(o)), "words": float(sum(w) / len(w))}


cfg = PPORLHFConfig(iterations=120, seed=0, progress=False, tensorboard=False)
rows = PPORLHFTrainer(
    policy, tok, reward_model_fn(rm, tok), cfg, reference=sft, metrics_fn=metrics
).train(rl.prompts(4000))
for r in rows[::10] + rows[-3:]:
    print(
        {
            k: round(v, 3)
            for k, v in r.items()
            if k.split("/")[-1]
            in ("step", "iteration", "score", "kl", "oracle", "words", "entropy", "reward")
        }
    )
