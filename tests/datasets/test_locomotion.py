"""The D4RL-style locomotion datasets: recording, building (seeded, cached), loading ours and
Minari's published layout, and training on them with normalised evaluation scores."""

from __future__ import annotations

import dataclasses
import json

import gymnasium as gym
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from embodied_rl.agents import TrainerConfig, train
from embodied_rl.agents.trainer import env_factory
from embodied_rl.cli import LOCOMOTION_BODIES, LOCOMOTION_KINDS, main
from embodied_rl.datasets import dataset_dir
from embodied_rl.datasets.locomotion import (
    BODIES,
    KINDS,
    EpisodeRecorder,
    load_locomotion,
    locomotion_id,
    run_episodes,
)
from embodied_rl.runners import locomotion as runner

TINY = runner.LocomotionConfig(
    env_steps=4096, snapshot_every=2048, eval_episodes=2, transitions=1500, seed=3
)


def test_recorder_keeps_what_the_environment_did():
    episodes = []
    env = EpisodeRecorder(gym.make("Hopper-v5"), lambda n, ep: episodes.append((n, ep)))
    reference = gym.make("Hopper-v5")
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=5)
    ref_obs, _ = reference.reset(seed=5)
    observations, rewards, actions = [ref_obs], [], []
    while not episodes:
        action = rng.uniform(-2, 2, size=3).astype(np.float32)  # beyond [-1, 1]
        obs, reward, terminated, truncated, _ = env.step(action)
        ref_obs, ref_reward, *_ = reference.step(np.clip(action, -1, 1))
        observations.append(ref_obs)
        rewards.append(ref_reward)
        actions.append(np.clip(action, -1, 1))
    steps, episode = episodes[0]
    assert steps == len(rewards) and terminated and not truncated  # Hopper falls at random
    np.testing.assert_array_equal(episode.observations, np.stack(observations))
    np.testing.assert_array_equal(episode.actions, np.stack(actions))
    np.testing.assert_array_equal(episode.rewards, rewards)
    assert episode.terminations[-1] and not episode.terminations[:-1].any()
    assert not episode.truncations.any() and episode.metadata == {"seed": 5}


def test_run_episodes_cuts_the_last_episode_at_the_budget():
    env = gym.make("Hopper-v5")
    episodes = run_episodes(env, lambda obs: np.zeros(3, np.float32), 1000, seed=7)
    assert sum(len(e) for e in episodes) == 1000
    assert episodes[-1].truncations[-1] and not episodes[-1].terminations.any()
    assert [e.metadata["seed"] for e in episodes] == list(range(7, 7 + len(episodes)))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The six datasets of a tiny Hopper build (4,096 PPO steps), through the command line."""
    root = tmp_path_factory.mktemp("locomotion")
    args = [
        "datasets", "locomotion", "--bodies", "hopper", "--root", str(root / "data"),
        "--work", str(root / "work"), "--env-steps", "4096", "--snapshot-every", "2048",
        "--eval-episodes", "2", "--transitions", "1500", "--seed", "3", "--no-progress",
    ]  # fmt: skip
    assert main(args) == 0
    return root


def test_every_kind_is_built_with_d4rl_reference_scores(built):
    data = {k: load_locomotion("hopper", k, built / "data") for k in KINDS}
    behaviour = json.loads((built / "work" / "hopper" / "behaviour.json").read_text())
    for kind, d in data.items():
        meta = d.metadata
        assert meta["ref_min_score"] == pytest.approx(data["random"].episode_returns().mean(), 0.2)
        assert meta["embodied_rl"]["locomotion"]["kind"] == kind
        assert d.observation_space.shape == (11,) and d.action_space.shape == (3,)
    for kind in ("random", "medium", "expert"):
        assert data[kind].n_transitions == 1500
    assert data["medium-expert"].n_transitions == 3000
    full = data["full-replay"]
    assert full.n_transitions <= 4096  # PPO's training episodes (the running ones are dropped)
    replay = data["medium-replay"]
    np.testing.assert_array_equal(  # a prefix of the training episodes
        replay.actions, full.actions[: replay.n_transitions]
    )
    steps = [s for s, _ in behaviour["snapshots"]]
    assert steps == [2048, 4096] and behaviour["expert_step"] in steps
    assert behaviour["medium_step"] in steps
    ends = [m["end_step"] for m in replay.episode_metadata]
    assert ends == sorted(ends) and ends[-1] <= behaviour["medium_step"]
    assert data["expert"].metadata["ref_max_score"] == pytest.approx(  # cut episode left out
        np.mean([r for r, m in zip(data["expert"].episode_returns(),
                                   data["expert"].episode_metadata, strict=True)
                 if not m.get("cut")])
    )  # fmt: skip


def test_the_medium_policy_is_the_first_to_reach_a_third_of_the_expert():
    config = runner.LocomotionConfig()
    snapshots = [(1, 50.0), (2, 400.0), (3, 2000.0), (4, 3000.0), (5, 900.0), (6, 1200.0)]
    chosen = runner.choose_policies(snapshots, 0.0, config)  # target 1000
    assert (chosen.medium_step, chosen.expert_step) == (3, 4)


def test_minari_reads_our_datasets(built, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(built / "data"))
    theirs = minari.load_dataset(locomotion_id("hopper", "medium"))
    ours = load_locomotion("hopper", "medium", built / "data")
    assert theirs.total_steps == ours.n_transitions
    first = next(iter(theirs.iterate_episodes()))
    np.testing.assert_array_equal(first.actions, ours.episode(0).actions)
    assert theirs.spec.env_spec.id == "Hopper-v5"


def test_a_build_with_the_same_settings_is_cached(built, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the behaviour policy was trained again")

    monkeypatch.setattr(runner, "train_behaviour", no_training)
    paths = runner.build_locomotion("hopper", built / "data", TINY, ("medium", "expert"))
    # other dataset settings, same training: the behaviour policy is reused from work/
    for transitions in (900, TINY.transitions):  # and back, for the other tests
        runner.build_locomotion(
            "hopper", built / "data", dataclasses.replace(TINY, transitions=transitions),
            ("random",), built / "work" / "hopper",
        )  # fmt: skip
        assert load_locomotion("hopper", "random", built / "data").n_transitions == transitions
    assert paths["medium"] == dataset_dir(built / "data", "locomotion/hopper/medium-v0")
    other = dataclasses.replace(TINY, env_steps=6144)
    with pytest.raises(AssertionError, match="trained again"):
        runner.build_locomotion("hopper", built / "data", other, ("medium",), built / "work")


def test_the_build_is_reproducible(built, tmp_path):
    paths = runner.build_locomotion(
        "hopper", tmp_path / "data", TINY, ("medium", "medium-replay"), tmp_path / "work", False
    )
    for kind, path in paths.items():
        again = dataset_dir(built / "data", locomotion_id("hopper", kind))
        checksum = [
            json.loads((p / "data" / "metadata.json").read_text())["embodied_rl"]["checksum"]
            for p in (path, again)
        ]
        assert checksum[0] == checksum[1], kind


def test_offline_training_scores_on_the_body(built, tmp_path):
    data = load_locomotion("hopper", "medium-replay", built / "data")
    config = TrainerConfig(steps=20, batch_size=32, eval_every=20, eval_episodes=2, progress=False)
    _, final = train("td3bc", data, tmp_path, None, config)  # the last evaluation
    assert np.isfinite(final["eval/normalized_score"]) and final["eval/mean_return"] > 0


def test_minari_published_layout_loads_and_evaluates(tmp_path, monkeypatch):
    """A small file as Minari publishes ``mujoco/hopper/medium-v0`` (plain Box observations,
    env_spec, reference scores), read by the same loader and evaluated on its env_spec."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = gym.make("Hopper-v5")
    rng = np.random.default_rng(0)
    buffers = []
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        observations, actions, rewards, terminations = [obs], [], [], []
        for _ in range(40):
            action = rng.uniform(-1, 1, 3).astype(np.float32)
            obs, reward, terminated, _, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            terminations.append(terminated)
            if terminated:
                break
        buffers.append(
            EpisodeBuffer(
                observations=np.stack(observations),
                actions=np.stack(actions),
                rewards=rewards,
                terminations=terminations,
                truncations=[False] * (len(rewards) - 1) + [not terminated],
            )  # fmt: skip
        )
    with pytest.warns(UserWarning):  # minari asks for an author etc.
        minari.create_dataset_from_buffers(
            "mujoco/hopper/medium-v0", buffers, env=env, ref_min_score=-20.0, ref_max_score=3000.0,
        )  # fmt: skip
    data = load_locomotion("hopper", "medium", tmp_path)
    assert data.n_episodes == 3 and list(data.observations) == ["observation"]
    assert data.observations["observation"].dtype == np.float64
    assert env_factory(data)().spec.id == "Hopper-v5"
    config = TrainerConfig(steps=5, batch_size=16, eval_every=5, eval_episodes=1, progress=False)
    _, final = train("bc", data, tmp_path / "run", None, config)
    assert "eval/normalized_score" in final
    with pytest.raises(FileNotFoundError, match="erl datasets locomotion --bodies walker2d"):
        load_locomotion("walker2d", "medium", tmp_path)


def test_names_and_settings_are_checked():
    assert tuple(BODIES) == LOCOMOTION_BODIES and tuple(KINDS) == LOCOMOTION_KINDS
    with pytest.raises(ValueError, match="body='ant'.*hopper"):
        locomotion_id("ant", "medium")
    with pytest.raises(ValueError, match="kind='mixed'"):
        locomotion_id("hopper", "mixed")
    with pytest.raises(ValueError, match="snapshot_every=10 exceeds env_steps=5"):
        runner.LocomotionConfig(env_steps=5, snapshot_every=10)
    defaults = runner.LocomotionConfig()
    parser_defaults = {  # `erl datasets locomotion` shows the config's defaults
        "env_steps": 1_000_000, "snapshot_every": 50_000, "eval_episodes": 10,
        "transitions": 200_000, "seed": 0,
    }  # fmt: skip
    assert {k: getattr(defaults, k) for k in parser_defaults} == parser_defaults


def test_offline_to_online_runs_on_a_locomotion_dataset(built, tmp_path, monkeypatch):
    """The `locomotion` bench suite's path: a task naming a dataset, offline then online."""
    from embodied_rl.runners.benchmark import (
        RunSpec,
        execute_run,
        load_suite,
        prepare_dataset,
        suite_from_dict,
    )

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(built / "data"))
    shipped = load_suite("locomotion")
    assert shipped.task("hopper").dataset == "locomotion/hopper/medium-replay-v0"
    suite = suite_from_dict(
        {
            "name": "tiny-locomotion",
            "tasks": [{"name": "hopper", "env_id": "Hopper-v5", "dataset": shipped.task("hopper").dataset}],
            "offline_steps": 4, "batch_size": 16, "hidden": [16, 16],
            "online": {"env_steps": 30, "batch_size": 16, "eval_every": 15, "eval_episodes": 1,
                       "checkpoint_every": 15, "log_every": 15},
        }
    )  # fmt: skip
    path = prepare_dataset(suite, suite.task("hopper"), tmp_path / "unused")
    assert path == dataset_dir(built / "data", "locomotion/hopper/medium-replay-v0")
    data = load_locomotion("hopper", "medium-replay", built / "data")
    record = execute_run(RunSpec("calql", "hopper", 0), suite, data, tmp_path / "run")
    assert record["env_steps"] == 30 and record["env_id"] == "Hopper-v5"
    assert np.isfinite(record["offline_score"]) and np.isfinite(record["online_score"])
    assert [point[0] for point in record["curve"]][-1] == 30
