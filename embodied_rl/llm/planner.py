"""A language-model planner over robot skills with SayCan's scoring (Ahn et al. 2022,
arXiv:2204.01691): the next skill is the candidate maximising ``log p_LM(skill | task, done
so far) + log affordance(skill)``, the LM's "is this useful" times the robot's "can I do it
here". The LM is any local causal LM; :func:`planner_sft_examples` makes the supervised data
to fine-tune the tiny one with :class:`~embodied_rl.llm.sft.SFTTrainer` on decompositions the
long-horizon tabletop tasks generate. The candidate skills of a tabletop scene are
:func:`~embodied_rl.envs.tabletop.long_horizon.skill_candidates`, plus :data:`DONE`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


Chooser = Callable[[str, list[str], list[str]], str]  # (task, done, options) -> skill


Detector = Callable[..., bool]
"""``detector(env, spec, start) -> bool``: whether the skill ``spec`` is done in ``env``'s
current scene, ``start`` being the scene state where the skill started."""


@dataclass
class PlanResult:
    """One closed-loop episode: whether the long-horizon task succeeded, the skills done (in
    order) and the skills that failed (then excluded from the options)."""

    success: bool
    done: list[str]
    failed: list[str]


def run_plan(
    env,
    choose: Chooser,
    expert,
    max_skills: int = 6,
    replan: bool = True,
    detector: Detector | None = None,
    confirm: int = 1,
) -> PlanResult:
    """Plan and act one episode of a reset
    :class:`~embodied_rl.envs.tabletop.long_horizon.LongHorizonTabletop` in closed loop
    (SayCan's loop with Inner Monologue's success feedback): ``choose(task, done, options)``
    names the next skill among the scene's :func:`skill_candidates` and :data:`DONE`;
    ``expert`` (a :class:`~embodied_rl.envs.tabletop.experts.TabletopExpert`) executes it for
    up to its family's horizon; a success detector decides whether it is done: ``detector``
    (see :func:`execute_skill`), by default the skill's own success test on the simulator's
    state (:func:`simulator_success`), which must say so on ``confirm`` consecutive steps. A
    failed skill is dropped from the options and the planner chooses again (``replan``; else
    the episode stops there). The episode also ends with the environment's."""
    from embodied_rl.envs.tabletop.long_horizon import skill_specs

    specs = skill_specs(env.layout)
    done: list[str] = []
    failed: list[str] = []
    success = ended = False
    try:
        for _ in range(max_skills):
            options = [c for c in [*specs, DONE] if c not in failed]
            skill = choose(env.instruction, list(done), options)
            if skill not in options:
                raise ValueError(f"the planner chose {skill!r}, which is not among its options")
            if skill == DONE:
                break
            achieved, success, ended = execute_skill(env, expert, specs[skill], detector, confirm)
            (done if achieved else failed).append(skill)
            if ended or (not achieved and not replan):
                break
    finally:
        expert.follow(None)
    return PlanResult(success, done, failed)


class PolicyExecutor:
    """A learned policy as :func:`run_plan`'s executor, in place of the scripted expert (the
    same ``follow(skill)`` / ``act()`` interface). It acts on the environment's
    :meth:`~embodied_rl.envs.tabletop.base.TabletopEnvBase.task_observation` of the skill it
    follows (goals counted from the scene where the skill started): a state policy sees the
    skill's task encoding, a vision-language policy the skill's instruction. The policy is any
    :class:`~embodied_rl.policies.Policy` trained on single skills (``act(obs)``, ``reset()``)."""

    def __init__(self, env, policy, deterministic: bool = True) -> None:
        self.env, self.policy, self.deterministic = env, policy, deterministic
        self.task = None
        self._start = None

    def follow(self, task) -> None:
        """Execute ``task`` (a :class:`~embodied_rl.envs.tabletop.tasks.TaskSpec` on the
        current scene) from now on; its goals count from the objects' positions now. None
        stops following."""
        self.task = task
        self._start = None if task is None else self.env.unwrapped.scene_state().object_pos.copy()
        self.policy.reset()

    def act(self, obs=None):
        """The policy's action for the followed skill in the current scene (``obs``, the
        environment's own observation, is not used: it encodes the environment's task)."""
        if self.task is None:
            raise RuntimeError("follow() a skill before asking the executor for an action")
        view = self.env.unwrapped.task_observation(self.task, self._start)
        return self.policy.act(view, deterministic=self.deterministic)


def simulator_success(env, spec, start) -> bool:
    """The default success detector: ``spec``'s own success test on the simulator's current
    state, its goals counted from ``start`` (the
    :class:`~embodied_rl.envs.tabletop.tasks.SceneState` where the skill started)."""
    from embodied_rl.envs.tabletop import tasks

    state = dataclasses.replace(env.unwrapped.scene_state(), initial_object_pos=start.object_pos)
    return tasks.is_success(spec, state)


def execute_skill(
    env, expert, spec, detector: Detector | None = None, confirm: int = 1
) -> tuple[bool, bool, bool]:
    """Run ``expert`` on the skill ``spec`` in ``env`` (a reset long-horizon tabletop) for up
    to its family's horizon, stopping once ``detector(env, spec, start)`` says the skill is
    done on ``confirm`` consecutive steps (``start``: the scene where it started; default
    :func:`simulator_success`, a learned one:
    :meth:`~embodied_rl.llm.affordance.SkillAffordance.detector`, whose single-step false
    positives a ``confirm`` of 2-3 filters out) or the episode ends.
    Returns ``(achieved, task_success, ended)``: the skill done by the detector's judgement,
    the whole long-horizon task done (the environment's own test), the episode over. The
    expert follows ``spec`` until the next call of ``expert.follow``."""
    from embodied_rl.envs.tabletop import tasks

    if confirm < 1:
        raise ValueError(f"confirm={confirm} must be >= 1 (consecutive steps the detector agrees)")
    detector = detector or simulator_success
    expert.follow(spec)
    start = env.unwrapped.scene_state()
    success = ended = False
    streak = 0
    for _step in range(tasks.HORIZONS[spec.family]):
        _, _, terminated, truncated, info = env.step(expert.act())
        success, ended = bool(info["success"]), terminated or truncated
        streak = streak + 1 if detector(env, spec, start) else 0
        if streak >= confirm:
            return True, success, ended
        if ended:
            break
    return False, success, ended
