"""AI feedback on the offline synthetic task: a small LM judge labels the policy's own samples
for DPO (RLAIF), and critiques and revises them into SFT data (Constitutional AI's first stage).

The judge and critic is the demo's SFT model fine-tuned on the task's judge and
critique/revision examples (the oracle wrote their answers: a distilled AI feedback model).
Each stage prints the oracle's view, so whether the tiny judge helps is measured, not assumed.

python examples/llm_rlaif_constitutional.py [--out outputs/llm_example]

The trained models are saved under --out as transformers directories: helper/ (judge and
critic), revised/ (SFT on the revisions) and rlaif/model (the RLAIF policy).
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from embodied_rl.llm.constitutional import critique_and_revise, revision_sft_data
from embodied_rl.llm.demo import DemoConfig, prepare_demo
from embodied_rl.llm.dpo import DPOConfig
from embodied_rl.llm.evaluation import evaluate_policy
from embodied_rl.llm.models import save_causal_lm
from embodied_rl.llm.reward import RewardConfig
from embodied_rl.llm.rlaif import RLAIFConfig, ai_feedback_labeler, rlaif
from embodied_rl.llm.sft import SFTConfig, SFTTrainer
from embodied_rl.llm.tasks import JUDGE_CONSTITUTION, oracle_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/llm_example", help="output directory")
    out = parser.parse_args().out
    torch.set_num_threads(1)
    config = DemoConfig(  # the same as examples/llm_rlhf.py: they share the cache
        n_demonstrations=4_000, n_comparisons=4_000,
        sft=SFTConfig(steps=400, log_every=100), reward=RewardConfig(steps=500, log_every=100),
    )  # fmt: skip
    demo = prepare_demo(f"{out}/demo", config)
    tokenizer, sft = demo.tokenizer, demo.policy
    train = demo.task("train")
    prompts = demo.task("test").prompts(128)

    def oracle(policy) -> float:
        return evaluate_policy(policy, sft, tokenizer, prompts, demo.scorers())["oracle"]

    # the helper: judge and critic, taught the formats on oracle-written answers
    helper = copy.deepcopy(sft)
    data = (
        train.judge_examples(3_000) + train.critique_examples(1_500) + train.demonstrations(2_000)
    )
    SFTTrainer(helper, tokenizer, SFTConfig(steps=600, batch_size=16, max_length=256)).train(data)
    save_causal_lm(helper, f"{out}/helper", tokenizer)

    # Constitutional AI, supervised stage: critique -> revision -> SFT on the revisions
    revisions = critique_and_revise(helper, tokenizer, demo.task("rl").prompts(512))
    initial = [r.initial for r in revisions]
    final = [r.final for r in revisions]
    asked = [r.prompt for r in revisions]
    print(f"oracle of first answers {np.mean(oracle_scores(asked, initial)):.3f}, "
          f"of revisions {np.mean(oracle_scores(asked, final)):.3f}")  # fmt: skip
    print("example:", revisions[0])
    revised = copy.deepcopy(sft)
    SFTTrainer(revised, tokenizer, SFTConfig(steps=200, learning_rate=1e-4)).train(
        revision_sft_data(revisions)
    )
    save_causal_lm(revised, f"{out}/revised", tokenizer)
    print(f"oracle: SFT {oracle(sft):.3f} -> SFT on revisions {oracle(revised):.3f}")

    # RLAIF: the judge labels pairs of the policy's own samples, DPO learns from them
    labeler = ai_feedback_labeler(helper, tokenizer, JUDGE_CONSTITUTION, rationale_tokens=12)
    policy = copy.deepcopy(sft)
    rlaif_config = RLAIFConfig(
        rounds=2, prompts_per_round=128, dpo=DPOConfig(steps=60, log_every=60)
    )
    rows = rlaif(policy, tokenizer, labeler, demo.task("rl").prompts(2_000), rlaif_config,
                 reference=sft, score_fn=oracle_scores, out=f"{out}/rlaif")  # fmt: skip
    for row in rows:
        print({k: round(v, 3) for k, v in row.items()})
    save_causal_lm(policy, f"{out}/rlaif/model", tokenizer)
    print(f"oracle: SFT {oracle(sft):.3f} -> RLAIF {oracle(policy):.3f}")


if __name__ == "__main__":
    main()
