"""A language-model planner over robot skills with SayCan's scoring (Ahn et al. 2022,
arXiv:2204.01691): the next skill is the candidate maximising ``log p_LM(skill | task, done
so far) + log affordance(skill)``, the LM's "is this useful" times the robot's "can I do it
here". The LM is any local causal LM; :func:`planner_sft_examples` makes the supervised data
to fine-tune the tiny one with :class:`~embodied_rl.llm.sft.SFTTrainer` on decompositions the
long-horizon tabletop tasks generate. The candidate skills of a tabletop scene are
:func:`~embodied_rl.envs.tabletop.long_horizon.skill_candidates`, plus :data:`DONE`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from embodied_rl.llm.models import eval_mode, sequence_logprobs
from embodied_rl.utils.tokenizer import encode, pad

PLANNER_PROMPT = "Task: {task}\nDone: {done}\nNext:"
DONE = "done"  # the skill that ends the plan


def planner_prompt(task: str, done: Sequence[str]) -> str:
    """The planner's prompt: the long instruction and the skills already done, in order."""
    return PLANNER_PROMPT.format(task=task, done="; ".join(done) if done else "nothing")


def saycan_scores(lm_logprobs: Tensor, affordances: Tensor | None = None) -> Tensor:
    """SayCan's combined score per candidate, in log space: ``log p_LM + log affordance``
    (affordances in [0, 1], floored at 1e-6; None: the LM alone)."""
    if affordances is None:
        return lm_logprobs
    if affordances.shape != lm_logprobs.shape:
        raise ValueError(
            f"affordances {tuple(affordances.shape)} do not match the "
            f"{tuple(lm_logprobs.shape)} candidates"
        )
    return lm_logprobs + affordances.clamp(1e-6, 1.0).log()


@torch.no_grad()
def skill_logprobs(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: str, skills: Sequence[str]
) -> Tensor:
    """``(K,)`` log-probability of each skill (``" " + skill`` then EOS) after ``prompt``."""
    if not skills:
        raise ValueError("no candidate skills to score")
    prompt_ids = encode(tokenizer, [prompt])[0]
    rows, masks = [], []
    for ids in encode(tokenizer, [" " + s for s in skills]):
        rows.append(prompt_ids + ids + [tokenizer.eos_token_id])
        masks.append([0] * len(prompt_ids) + [1] * (len(ids) + 1))
    input_ids = pad(rows, tokenizer.pad_token_id)
    attention = pad([[1] * len(r) for r in rows], 0)
    with eval_mode(model):
        return sequence_logprobs(model, input_ids, attention, pad(masks, 0))


class SayCanPlanner:
    """Chooses the next skill with SayCan's score. ``affordance(skills) -> (K,)`` values in
    [0, 1] for the current scene (a success classifier, an IQL critic's normalised value);
    None scores with the LM alone."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        affordance: Callable[[Sequence[str]], Tensor] | None = None,
    ) -> None:
        self.model, self.tokenizer, self.affordance = model, tokenizer, affordance

    def scores(self, task: str, done: Sequence[str], candidates: Sequence[str]) -> Tensor:
        """``(K,)`` SayCan scores of ``candidates`` as the next skill."""
        lm = skill_logprobs(self.model, self.tokenizer, planner_prompt(task, done), candidates)
        affordances = self.affordance(candidates) if self.affordance is not None else None
        return saycan_scores(lm, affordances)

    def next_skill(self, task: str, done: Sequence[str], candidates: Sequence[str]) -> str:
        """The best-scoring candidate (add :data:`DONE` to let the planner stop)."""
        return candidates[int(self.scores(task, done, candidates).argmax())]


def planner_sft_examples(env, seeds: Sequence[int]) -> list[tuple[str, str]]:
    """Supervised planning data from a
    :class:`~embodied_rl.envs.tabletop.long_horizon.LongHorizonTabletop`: for each reset seed,
    one example per decision (each step in its first phrasing, then :data:`DONE`) as
    (prompt, " " + skill)."""
    examples = []
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        task, steps = env.instruction, env.canonical_steps
        for k, skill in enumerate([*steps, DONE]):
            examples.append((planner_prompt(task, steps[:k]), " " + skill))
    return examples
