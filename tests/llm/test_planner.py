"""The SayCan-style planner: its scores, the LM's skill likelihoods, and a tiny LM fine-tuned
on generated decompositions choosing the next skill of held-out long-horizon tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embodied_rl.envs import make
from embodied_rl.envs.tabletop.long_horizon import LongHorizonTabletop, skill_candidates
from embodied_rl.llm.models import build_causal_lm, tiny_gpt2_config
from embodied_rl.llm.planner import (
    DONE,
    SayCanPlanner,
    planner_prompt,
    planner_sft_examples,
    saycan_scores,
    skill_logprobs,
)
from embodied_rl.llm.sft import SFTConfig, SFTTrainer
from embodied_rl.utils.tokenizer import train_tokenizer


def test_saycan_scores_add_log_affordances():
    lm = torch.tensor([-1.0, -2.0, -0.5])
    torch.testing.assert_close(saycan_scores(lm), lm)
    scores = saycan_scores(lm, torch.tensor([1.0, 0.5, 0.0]))
    torch.testing.assert_close(
        scores[:2], torch.tensor([-1.0, -2.0 + torch.log(torch.tensor(0.5))])
    )
    assert scores.argmax() == 0 and scores[2] < -13  # an unaffordable skill: floored at 1e-6
    with pytest.raises(ValueError, match="do not match"):
        saycan_scores(lm, torch.ones(2))


def test_skill_logprobs_are_the_summed_token_logprobs_with_eos():
    tok = train_tokenizer(["Task: reach it\nDone: nothing\nNext: reach the red block"] * 3)
    model = build_causal_lm(tiny_gpt2_config(tok, n_layer=1, n_embd=32, n_head=2), seed=0)
    prompt = planner_prompt("reach it", [])
    got = skill_logprobs(model, tok, prompt, ["reach the red block", DONE])
    for i, skill in enumerate(["reach the red block", DONE]):
        p = tok(prompt, add_special_tokens=False)["input_ids"]
        s = tok(" " + skill, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        logits = model(torch.tensor([p + s])).logits[0].log_softmax(-1)
        want = sum(logits[len(p) - 1 + j, t] for j, t in enumerate(s))
        torch.testing.assert_close(got[i], want, rtol=1e-4, atol=1e-4)


def test_a_tiny_lm_fine_tuned_on_decompositions_plans_held_out_tasks():
    """SFT on 900 decisions of 300 generated seen-composition episodes; on 15 held-out
    episodes (45 decisions among 57 candidates, chance < 2%) the planner picks the right
    next skill (the step in its first phrasing, or done) far above chance; an affordance of
    0 on its choice moves SayCan's choice elsewhere."""
    torch.manual_seed(0)
    env = LongHorizonTabletop(make("tabletop/reach-v0", n_objects=4), split="seen")
    train = planner_sft_examples(env, range(300))
    assert len(train) == 900 and train[2][1] == " " + DONE
    tok = train_tokenizer([p + r for p, r in train], vocab_size=600)
    model = build_causal_lm(tiny_gpt2_config(tok), seed=0)
    config = SFTConfig(steps=300, batch_size=32, learning_rate=2e-3, max_length=128,
                       progress=False, tensorboard=False)  # fmt: skip
    SFTTrainer(model, tok, config).train(train)
    planner = SayCanPlanner(model, tok)
    right = n = 0
    for seed in range(10_000, 10_015):
        env.reset(seed=seed)
        candidates = [*skill_candidates(env.layout), DONE]
        steps = env.canonical_steps
        for k, want in enumerate([*steps, DONE]):
            right += planner.next_skill(env.instruction, steps[:k], candidates) == want
            n += 1
    assert right / n > 0.3, (right, n)  # 53% seen, 47% unseen over 20 episodes each
    choice = planner.next_skill(env.instruction, [], candidates)
    blocked = SayCanPlanner(model, tok, lambda c: torch.tensor([x != choice for x in c]).float())
    assert blocked.next_skill(env.instruction, [], candidates) != choice


def test_closed_loop_execution_with_success_feedback_and_replanning():
    """run_plan executes each chosen skill with the expert until the skill's own success test
    holds: the true steps in order succeed; in reverse order every episode fails (order
    matters); a skill that fails is dropped from the options and the planner chooses again
    (or, without replanning, the episode stops)."""
    from embodied_rl.envs import make_expert
    from embodied_rl.llm.planner import run_plan

    env = LongHorizonTabletop(make("tabletop/reach-v0", n_objects=4), split="all")
    expert = make_expert(env)

    def in_order(steps):
        def choose(task, done, options):
            step = [*steps(), DONE, DONE][len(done)]
            return step if step in options else DONE

        return choose

    results = []
    for seed in range(6):
        env.reset(seed=seed)
        results.append(run_plan(env, in_order(lambda: env.canonical_steps), expert))
        assert expert.task is None  # the expert follows the environment again
    assert sum(r.success for r in results) >= 5
    assert results[-1].done == env.canonical_steps or not results[-1].success
    for seed in range(3):
        env.reset(seed=seed)
        assert not run_plan(env, in_order(lambda: env.canonical_steps[::-1]), expert).success

    class Idle:  # an executor that never moves: every skill fails
        task = None

        def follow(self, task):
            self.task = task

        def act(self, obs=None):
            return np.zeros(4, np.float32)

    offered = []

    def first_options(task, done, options):
        offered.append(list(options))
        return options[0]

    env.reset(seed=0)
    result = run_plan(env, first_options, Idle(), max_skills=3)
    assert not result.done and len(result.failed) == 3 and not result.success
    assert [o[0] for o in offered] == result.failed  # each failure leaves the options
    assert all(f not in later for i, f in enumerate(result.failed) for later in offered[i + 1 :])
    env.reset(seed=0)
    assert len(run_plan(env, first_options, Idle(), replan=False).failed) == 1
    env.reset(seed=1)
    with pytest.raises(ValueError, match="not among its options"):
        run_plan(env, lambda task, done, options: "fly to the moon", expert)


def test_a_policy_executes_the_followed_skill_not_the_environments_task():
    """PolicyExecutor gives its policy the scene as the followed skill's task: a controller
    that only reads the state's goal-relative entries reaches the object the *skill* names,
    on another object than the environment's task's, and the skill's success test ends it."""
    from embodied_rl.envs.tabletop import tasks
    from embodied_rl.envs.tabletop.base import TabletopEnvBase
    from embodied_rl.llm.planner import PolicyExecutor, execute_skill

    class GoalSeeker:  # a "policy" reading only the last six state entries
        resets = 0

        def reset(self):
            self.resets += 1

        def act(self, obs, deterministic=True):
            rel = obs["state"][-6:-3] + obs["state"][-3:]  # goal - fingertips
            step = np.clip(rel / env.unwrapped.config.max_delta_m, -1.0, 1.0)
            return np.array([*step, -1.0], np.float32)

    env = make("tabletop/reach-v0", n_objects=4)
    base = env.unwrapped
    assert isinstance(base, TabletopEnvBase)
    policy = GoalSeeker()
    executor = PolicyExecutor(env, policy)
    with pytest.raises(RuntimeError, match="follow"):
        executor.act()
    for seed in range(3):
        env.reset(seed=seed)
        own = base.spec_
        other = tasks.task_spec(base.layout, "reach", (own.object_slot + 1) % 4)
        achieved, task_success, _ = execute_skill(env, executor, other)
        assert achieved and not task_success  # the other object, not the task's
        assert tasks.is_success(other, base.scene_state()) and base.spec_ is own
    assert policy.resets == 3
    executor.follow(None)
    assert executor.task is None
