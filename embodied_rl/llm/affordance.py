"""A learned affordance for SayCan on the long-horizon tabletop tasks, and a learned success
detector for Inner Monologue: two success classifiers.

SayCan (Ahn et al. 2022, arXiv:2204.01691) multiplies the LM's ``p(skill | task)`` by the
probability that the skill succeeds from the current state, read from the skill policies'
value functions. Here that probability is learned directly as a classifier
``P(success | scene, skill)`` on executions of candidate skills by the low-level executor
(the scripted expert) from the states a long-horizon episode passes through: before its first
step and after it. The scene is the simulator's privileged state (gripper, objects, fixtures,
the objects' shapes), the skill its structured description (family, object slot, target slot,
direction, fixture): one network for all 56 skills of a scene, as SayCan's multi-task value.

    examples = affordance_examples(env, expert, seeds=range(400))
    model = train_affordance(examples, AffordanceConfig())
    planner = SayCanPlanner(lm, tokenizer, affordance=model.for_env(env))

Inner Monologue (Huang et al. 2022, arXiv:2207.05608) closes the loop with success feedback
that, on a robot, has to come from perception rather than the simulator. The detector is the
same network asked another question, ``P(done | scene now, scene at the skill's start,
skill)`` (with the relations a success test is made of, :func:`detector_features`), trained on every step of the expert's executions labelled by the skill's own
success test (:func:`detector_examples`), and used in place of that test by
:func:`~embodied_rl.llm.planner.run_plan`:

    examples = detector_examples(env, expert, seeds=range(300))
    detector = train_affordance(examples, AffordanceConfig()).detector()
    run_plan(env, choose, expert, detector=detector)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from embodied_rl.envs.tabletop import tasks
from embodied_rl.envs.tabletop.scene import SHAPES
from embodied_rl.llm.training import run_steps
from embodied_rl.policies.mlp import mlp


def scene_features(env, state: tasks.SceneState | None = None) -> np.ndarray:
    """The current scene of a tabletop ``env`` (or ``state``, a scene state of its episode) as
    a vector: gripper position and opening, each object's position and shape, bowl and plate
    positions (float32)."""
    s = env.unwrapped.scene_state() if state is None else state
    shapes = np.array([[shape == k for k in SHAPES] for shape in env.layout.shapes], np.float32)
    parts = [s.ee_pos, [s.finger_opening], s.object_pos.ravel(), shapes.ravel(), s.bowl_pos,
             s.plate_pos]  # fmt: skip
    return np.concatenate([np.asarray(p, np.float32).ravel() for p in parts])


def detector_features(env, spec: tasks.TaskSpec, start: tasks.SceneState) -> np.ndarray:
    """What a success detector reads: :func:`scene_features` now and at the skill's start, and
    the relations a success test is made of, for the objects ``spec`` names: the named object's
    displacement since the start and its position relative to the gripper, the target object
    (zeros without one), the bowl and the plate (float32). Without the named object's relations
    an MLP must select poses by the skill's one-hot slot, a product of inputs it learns slowly
    (the same finding as the tabletop state's task-relative vectors)."""
    now = env.unwrapped.scene_state()
    named = now.object_pos[spec.object_slot]
    target = (np.zeros(3) if spec.target_slot is None
              else named - now.object_pos[spec.target_slot])  # fmt: skip
    relations = [named - start.object_pos[spec.object_slot], named - now.ee_pos, target,
                 named - now.bowl_pos, named - now.plate_pos]  # fmt: skip
    return np.concatenate(
        [scene_features(env, now), scene_features(env, start)]
        + [np.asarray(r, np.float32).ravel() for r in relations]
    )


def skill_features(spec: tasks.TaskSpec, n_objects: int) -> np.ndarray:
    """One-hot family, object slot, target slot (or none), direction (or none) and fixture
    (or none) of a skill (float32)."""

    def one_hot(value, options) -> list[float]:
        return [float(value == o) for o in options]

    slots = list(range(n_objects))
    return np.array(
        one_hot(spec.family, tasks.FAMILIES)
        + one_hot(spec.object_slot, slots)
        + one_hot(spec.target_slot, [*slots, None])
        + one_hot(spec.direction, [*tasks.DIRECTIONS, None])
        + one_hot(spec.fixture, [*tasks.FIXTURES, None]),
        np.float32,
    )


@dataclass
class AffordanceExamples:
    """Labelled executions: ``scene`` ``(N, S)``, ``skill`` ``(N, K)``, ``success`` ``(N,)``,
    ``seed`` ``(N,)`` (the episode's reset seed) and ``stage`` ``(N,)`` (skills done before)."""

    scene: np.ndarray
    skill: np.ndarray
    success: np.ndarray
    seed: np.ndarray
    stage: np.ndarray

    def __len__(self) -> int:
        return len(self.success)

    def subset(self, mask: np.ndarray) -> AffordanceExamples:
        return AffordanceExamples(self.scene[mask], self.skill[mask], self.success[mask],
                                  self.seed[mask], self.stage[mask])  # fmt: skip


def affordance_examples(
    env, expert, seeds: Iterable[int], skills_per_state: int = 6, rng_seed: int = 0
) -> AffordanceExamples:
    """Execute candidate skills with ``expert`` and record whether each succeeded.

    For each reset seed of ``env`` (a
    :class:`~embodied_rl.envs.tabletop.long_horizon.LongHorizonTabletop`) and each stage
    (0: the scene as reset; 1: after the expert did the task's first step), ``skills_per_state``
    skills are drawn: the task's true next step and uniformly random others among the
    scene's candidates. Each is executed from a fresh reset (re-doing the first step for stage
    1: resets are ~1 ms), with the success test of
    :func:`~embodied_rl.llm.planner.execute_skill`. A stage whose first step fails is skipped."""
    from embodied_rl.llm.planner import execute_skill

    if skills_per_state < 1:
        raise ValueError(f"skills_per_state={skills_per_state} must be >= 1")
    rows: dict[str, list] = {k: [] for k in ("scene", "skill", "success", "seed", "stage")}
    try:
        for seed, stage, spec in _executions(env, expert, seeds, skills_per_state, rng_seed):
            rows["scene"].append(scene_features(env))
            rows["skill"].append(skill_features(spec, len(env.layout.colors)))
            rows["success"].append(execute_skill(env, expert, spec)[0])
            rows["seed"].append(seed)
            rows["stage"].append(stage)
    finally:
        expert.follow(None)
    return _stack(rows)


def _executions(env, expert, seeds: Iterable[int], skills_per_state: int, rng_seed: int):
    """Yield ``(seed, stage, spec)`` with ``env`` in the scene the skill starts from: per reset
    seed and stage (0: as reset; 1: after the expert did the first step, skipped when it
    fails), the task's true next step and ``skills_per_state - 1`` random other candidates."""
    from embodied_rl.envs.tabletop.long_horizon import skill_specs
    from embodied_rl.llm.planner import execute_skill

    rng = np.random.default_rng(rng_seed)
    for seed in seeds:
        env.reset(seed=int(seed))
        specs = skill_specs(env.layout)
        names, steps = list(specs), env.canonical_steps
        for stage in (0, 1):
            others = [n for n in names if n != steps[stage]]
            picks = rng.choice(len(others), size=min(skills_per_state - 1, len(others)),
                               replace=False)  # fmt: skip
            for name in [steps[stage], *(others[i] for i in picks)]:
                env.reset(seed=int(seed))
                if stage == 1 and not execute_skill(env, expert, specs[steps[0]])[0]:
                    break  # no stage-1 state in this episode
                yield int(seed), stage, specs[name]


def _stack(rows: dict[str, list]) -> AffordanceExamples:
    if not rows["success"]:
        raise ValueError("no examples: seeds was empty")
    return AffordanceExamples(
        np.stack(rows["scene"]), np.stack(rows["skill"]), np.array(rows["success"], np.float32),
        np.array(rows["seed"]), np.array(rows["stage"]),
    )  # fmt: skip


def detector_examples(
    env, expert, seeds: Iterable[int], skills_per_state: int = 3, after: int = 10,
    rng_seed: int = 0,
) -> AffordanceExamples:  # fmt: skip
    """Every step of the expert's executions of skills, labelled done or not by the skill's
    own success test: the training data of a learned success detector.

    The executions are those of :func:`affordance_examples` (the true next step and random
    other candidates, from the scene as reset and after the first step), each run for its
    family's horizon and stopped ``after`` steps past its first success, so that the states
    just after "done" (the expert holding still) are positive examples too. ``scene`` holds
    :func:`detector_features`."""
    from embodied_rl.llm.planner import simulator_success

    if skills_per_state < 1 or after < 0:
        raise ValueError(f"skills_per_state={skills_per_state} must be >= 1, after={after} >= 0")
    rows: dict[str, list] = {k: [] for k in ("scene", "skill", "success", "seed", "stage")}
    try:
        for seed, stage, spec in _executions(env, expert, seeds, skills_per_state, rng_seed):
            start = env.unwrapped.scene_state()
            skill = skill_features(spec, len(env.layout.colors))
            expert.follow(spec)
            left = None
            for _ in range(tasks.HORIZONS[spec.family]):
                _, _, terminated, truncated, _ = env.step(expert.act())
                done = simulator_success(env, spec, start)
                rows["scene"].append(detector_features(env, spec, start))
                rows["skill"].append(skill)
                rows["success"].append(done)
                rows["seed"].append(seed)
                rows["stage"].append(stage)
                if done and left is None:
                    left = after
                if terminated or truncated or (left is not None and (left := left - 1) < 0):
                    break
    finally:
        expert.follow(None)
    return _stack(rows)


@dataclass(frozen=True)
class AffordanceConfig:
    """Training of :class:`SkillAffordance` (binary cross-entropy, Adam)."""

    hidden: tuple[int, ...] = (256, 256)
    steps: int = 3000
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(
                f"steps={self.steps}, batch_size={self.batch_size} and "
                f"learning_rate={self.learning_rate} must be positive"
            )


class SkillAffordance(nn.Module):
    """``P(success | scene, skill)``: an MLP on standardised scene features and one-hot skill
    features, with a logit output."""

    def __init__(self, scene_dim: int, skill_dim: int, hidden: tuple[int, ...] = (256, 256)):
        super().__init__()
        self.net = mlp([scene_dim + skill_dim, *hidden, 1])
        self.register_buffer("scene_mean", torch.zeros(scene_dim))
        self.register_buffer("scene_std", torch.ones(scene_dim))

    def forward(self, scene: Tensor, skill: Tensor) -> Tensor:
        """Logits ``(N,)``."""
        scene = (scene - self.scene_mean) / self.scene_std
        return self.net(torch.cat([scene, skill], dim=-1)).squeeze(-1)

    @torch.no_grad()
    def probabilities(self, scene: np.ndarray, skill: np.ndarray) -> np.ndarray:
        """``P(success)`` for rows of features, as a numpy array."""
        logits = self(torch.as_tensor(scene, dtype=torch.float32),
                      torch.as_tensor(skill, dtype=torch.float32))  # fmt: skip
        return torch.sigmoid(logits).numpy()

    def for_env(self, env) -> Callable[[Sequence[str]], Tensor]:
        """SayCan's ``affordance(skills) -> (K,)`` for the current scene of ``env``; the
        planner's :data:`~embodied_rl.llm.planner.DONE` always scores 1."""
        from embodied_rl.envs.tabletop.long_horizon import skill_specs
        from embodied_rl.llm.planner import DONE

        def affordance(skills: Sequence[str]) -> Tensor:
            specs = skill_specs(env.layout)
            scene = scene_features(env)
            n = len(env.layout.colors)
            names = [s for s in skills if s != DONE]
            unknown = [s for s in names if s not in specs]
            if unknown:
                raise ValueError(f"skills {unknown[:3]} are not among the scene's candidates")
            out = torch.ones(len(skills))
            if names:
                feats = np.stack([skill_features(specs[s], n) for s in names])
                probs = self.probabilities(np.repeat(scene[None], len(names), 0), feats)
                index = [i for i, s in enumerate(skills) if s != DONE]
                out[index] = torch.as_tensor(probs)
            return out

        return affordance

    def detector(self, threshold: float = 0.5):
        """This classifier, trained on :func:`detector_examples`, as
        :func:`~embodied_rl.llm.planner.run_plan`'s success detector: ``detector(env, spec,
        start)`` is True when ``P(done) >= threshold``."""
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold={threshold} must be in (0, 1)")

        def detect(env, spec, start) -> bool:
            scene = detector_features(env, spec, start)
            if scene.shape[0] != self.scene_mean.shape[0]:
                raise ValueError(
                    f"this classifier reads {self.scene_mean.shape[0]} scene features, a "
                    f"detector {scene.shape[0]} (detector_features): train it on "
                    "detector_examples, not affordance_examples"
                )
            skill = skill_features(spec, len(env.layout.colors))
            return bool(self.probabilities(scene[None], skill[None])[0] >= threshold)

        return detect


def train_affordance(
    examples: AffordanceExamples,
    config: AffordanceConfig = AffordanceConfig(),
    out: str | os.PathLike | None = None,
    progress: bool = False,
) -> SkillAffordance:
    """Fit a :class:`SkillAffordance` to ``examples`` (minibatch BCE for ``config.steps``)
    through the one training loop (``out``: its ``metrics.csv``)."""
    if len(examples) < 2:
        raise ValueError(f"{len(examples)} examples: need at least 2 to train an affordance")
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    scene = torch.as_tensor(examples.scene)
    skill = torch.as_tensor(examples.skill)
    label = torch.as_tensor(examples.success)
    model = SkillAffordance(scene.shape[1], skill.shape[1], config.hidden)
    model.scene_mean.copy_(scene.mean(0))
    model.scene_std.copy_(scene.std(0).clamp_min(1e-6))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)  # fmt: skip
    loss_fn = nn.BCEWithLogitsLoss()

    def step(_: int) -> dict[str, float]:
        idx = torch.randint(len(label), (config.batch_size,), generator=generator)
        loss = loss_fn(model(scene[idx], skill[idx]), label[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"bce": loss.item()}

    model.train()
    run_steps(step, config.steps, desc="affordance", out=out, progress=progress,
              tensorboard=False, log_every=max(1, config.steps // 10))  # fmt: skip
    model.eval()
    return model


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy at 0.5, the Brier score, the base rate and ROC AUC (the probability that a
    random success scores above a random failure, ties counting half)."""
    labels = labels.astype(bool)
    pos, neg = probs[labels], probs[~labels]
    if len(pos) and len(neg):
        greater = (pos[:, None] > neg[None, :]).mean()
        ties = (pos[:, None] == neg[None, :]).mean()
        auc = float(greater + 0.5 * ties)
    else:
        auc = float("nan")
    return {
        "accuracy": float(((probs >= 0.5) == labels).mean()),
        "brier": float(((probs - labels) ** 2).mean()),
        "base_rate": float(labels.mean()),
        "auc": auc,
    }
