"""The shared loop: NaN handling, atomic checkpoints, metrics files, learning on real data."""

from __future__ import annotations

import json

import pytest
import torch

from embodied_rl.agents import NonFiniteLossError, TrainerConfig, load_agent, train
from embodied_rl.agents import checkpoint as checkpoint_module
from embodied_rl.agents.checkpoint import latest_checkpoint, save_checkpoint
from embodied_rl.agents.trainer import Trainer, default_policy, make_sampler, seed_everything
from embodied_rl.policies import load_policy

QUIET = {"progress": False, "tensorboard": False, "eval_episodes": 0, "batch_size": 16}


class PoisonAfter:
    """Wraps a sampler: rewards become NaN from call ``n`` on."""

    def __init__(self, sampler, n: int) -> None:
        self.sampler, self.n, self.calls = sampler, n, 0
        self.rng, self._block = sampler.rng, sampler._block

    def sample(self):
        batch = self.sampler.sample()
        self.calls += 1
        if self.calls > self.n:
            batch["reward"] = torch.full_like(batch["reward"], float("nan"))
        return batch


def test_nan_loss_names_loss_and_step_and_keeps_last_good_checkpoint(tiny_data, tmp_path):
    from embodied_rl.agents import make_agent

    seed_everything(0)
    agent = make_agent("iql", default_policy("iql", tiny_data, hidden=(16,)))
    sampler = PoisonAfter(make_sampler(agent, tiny_data, 16), n=7)
    config = TrainerConfig(steps=20, checkpoint_every=5, log_every=5, **QUIET)
    with pytest.raises(NonFiniteLossError, match=r"'critic_loss' is nan at step 7") as info:
        Trainer(agent, sampler, config, tmp_path).fit()
    assert "step_000000005" in str(info.value.__cause__)
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step_000000005"
    restored = load_agent(tmp_path / "checkpoints")
    assert restored.step == 5
    assert all(torch.isfinite(p).all() for p in restored.critic.parameters())


def test_crash_mid_write_keeps_previous_checkpoint(tiny_data, tmp_path, monkeypatch):
    from embodied_rl.agents import make_agent

    agent = make_agent("bc", default_policy("bc", tiny_data, hidden=(16,)))
    sampler = make_sampler(agent, tiny_data, 16)
    agent.update(sampler.sample())
    first = save_checkpoint(agent, tmp_path)
    before = (first / "model.safetensors").read_bytes()
    agent.update(sampler.sample())

    calls = []

    def crash_on_second_file(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # model written, optimizer write crashes
            raise OSError("disk full")
        return real_save(tensors, path, *args, **kwargs)

    real_save = checkpoint_module.save_file
    monkeypatch.setattr(checkpoint_module, "save_file", crash_on_second_file)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(agent, tmp_path)
    assert latest_checkpoint(tmp_path) == first
    assert (first / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", first.name]  # no debris
    assert load_agent(tmp_path).step == 1


def test_fit_writes_metrics_checkpoints_and_prunes(tiny_data, tmp_path):
    config = TrainerConfig(steps=12, log_every=4, checkpoint_every=4, keep_checkpoints=2, **QUIET)
    agent, _ = train("bc", tiny_data, tmp_path, trainer_config=config)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,name,value,wall_s"
    assert [r.split(",")[0] for r in rows[1:] if ",train/bc_loss," in r] == ["4", "8", "12"]
    assert {r.split(",")[1] for r in rows[1:]} == {"train/bc_loss", "train/lr"}
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert kept == ["step_000000008", "step_000000012"]
    state = json.loads((tmp_path / "checkpoints" / kept[-1] / "state.json").read_text())
    assert state["step"] == 12 and {"python", "numpy", "torch", "sampler"} <= set(state["rng"])
    saved = load_policy(tmp_path / "policy")  # the trained policy as a standalone artifact
    for name, tensor in agent.policy.trainable_state_dict().items():
        assert torch.equal(saved.trainable_state_dict()[name], tensor), name


class SometimesMetric:
    """Wraps an agent: adds ``rare`` = the step number to every other step's metrics."""

    def __init__(self, agent) -> None:
        self.agent = agent

    def __getattr__(self, name):
        return getattr(self.agent, name)

    def update(self, batch):
        metrics = self.agent.update(batch)
        if self.agent.step % 2 == 0:
            metrics["rare"] = float(self.agent.step)
        return metrics


def test_metric_means_count_only_the_steps_that_logged_them(tiny_data, tmp_path):
    from embodied_rl.agents import make_agent

    config = TrainerConfig(steps=8, log_every=4, checkpoint_every=0, **QUIET)
    agent = SometimesMetric(make_agent("bc", default_policy("bc", tiny_data)))
    Trainer(agent, make_sampler(agent.agent, tiny_data, 16), config, tmp_path).fit()
    rows = [r.split(",") for r in (tmp_path / "metrics.csv").read_text().splitlines()[1:]]
    rare = {int(step): float(value) for step, name, value, _ in rows if name == "train/rare"}
    assert rare == {4: 3.0, 8: 7.0}  # means of (2, 4) and (6, 8), not halved


def test_trainer_config_errors_name_the_value():
    with pytest.raises(ValueError, match="steps=0"):
        TrainerConfig(steps=0)


def test_bc_on_expert_reach_beats_the_untrained_policy(tmp_path):
    """A short BC run on an expert dataset raises the normalized score (reach needs ~200
    episodes before an MLP generalises over goal positions; 20 were not enough)."""
    from embodied_rl.agents.trainer import env_factory, evaluate
    from embodied_rl.datasets import collect, load_dataset

    result = collect(
        "tabletop/reach-v0", "expert", episodes=200, out=tmp_path / "data",
        dataset_id="tests/reach-expert-v0", reference_episodes=3, progress=False,
    )  # fmt: skip
    data = load_dataset(result.path, obs_keys=["state"])
    seed_everything(0)
    untrained = default_policy("bc", data)
    env = env_factory(data)()
    before = evaluate(untrained, env, 10, seed=100, reference=data)["eval/normalized_score"]
    config = TrainerConfig(
        steps=2000, batch_size=128, log_every=500, eval_every=0, eval_episodes=10,
        checkpoint_every=0, progress=False, tensorboard=False,
    )  # fmt: skip
    _, after = train("bc", data, tmp_path / "run", trainer_config=config, policy=untrained)
    env.close()
    assert after["eval/normalized_score"] >= before + 30, (before, after)


def test_default_evaluation_never_replays_a_scene_of_the_training_data(tmp_path):
    """The trainer evaluates on held-out reset seeds, even for a collection whose seeds
    start where the old evaluation block did (10,000)."""
    import gymnasium as gym

    from embodied_rl.agents.trainer import env_factory
    from embodied_rl.datasets import collect, load_dataset

    result = collect(
        "tabletop/reach-v0", "expert", episodes=3, out=tmp_path / "data", seed=10_000,
        dataset_id="tests/reach-seeds-v0", reference_episodes=2, progress=False,
    )  # fmt: skip
    data = load_dataset(result.path, obs_keys=["state"])
    collection = data.metadata["embodied_rl"]["collection"]
    start = collection["seed"]
    scenes = set(range(start, start + 3)) | {start + 1_000_000 + j for j in range(2)}
    seeds: list[int] = []

    class RecordSeeds(gym.Wrapper):
        def reset(self, *, seed=None, options=None):
            seeds.append(seed)
            return self.env.reset(seed=seed, options=options)

    config = TrainerConfig(steps=2, eval_every=1, eval_episodes=3, **{
        k: v for k, v in QUIET.items() if k != "eval_episodes"
    })  # fmt: skip
    train("bc", data, tmp_path / "run", trainer_config=config,
          eval_env=lambda: RecordSeeds(env_factory(data)()))  # fmt: skip
    assert len(seeds) == 6 and None not in seeds
    assert not scenes & set(seeds), sorted(scenes & set(seeds))


def test_tiny_vla_bc_learns_expert_actions_on_held_out_scenes(tmp_path):
    """The tiny preset (random shifts, proprio token, Gaussian head) through the shared loop:
    on scenes it never saw, its actions move well towards the expert's within 150 steps."""
    from embodied_rl.agents.base import current_output, policy_input
    from embodied_rl.agents.data import AgentSampler
    from embodied_rl.datasets import collect, load_dataset
    from embodied_rl.datasets.samplers import SamplerConfig
    from embodied_rl.policies import VLAPolicy, vla_preset

    kwargs = {"out": tmp_path / "data", "progress": False, "reference_episodes": 1}
    env_kwargs = {"obs_mode": "rgb+state", "image_size": 64}
    train_data, held_out = (
        load_dataset(
            collect(
                "tabletop/reach-v0", "expert", episodes=n, seed=seed, dataset_id=f"tests/{name}-v0",
                env_kwargs=env_kwargs, **kwargs,
            ).path
        )
        for name, n, seed in (("train", 30, 0), ("held", 6, 10_000))
    )  # fmt: skip
    seed_everything(0)
    policy = VLAPolicy(vla_preset("tiny", history=1, dropout=0.0))

    def held_out_error() -> float:
        sampler = AgentSampler(held_out, config=SamplerConfig(batch_size=128, seed=1), history=1)
        batch = sampler.sample()
        policy.eval()
        with torch.no_grad():
            out = current_output(policy(policy_input(policy, batch)), policy, batch)
        policy.train()
        return float((policy.head.mode(out) - batch["action"]).square().mean())

    before = held_out_error()
    config = TrainerConfig(steps=150, batch_size=32, checkpoint_every=0, **{
        k: v for k, v in QUIET.items() if k != "batch_size"
    })  # fmt: skip
    train("bc", train_data, tmp_path / "run", trainer_config=config, policy=policy)
    assert policy.proprio_norm.is_fitted  # the trainer fitted the proprio statistics
    after = held_out_error()
    assert after < 0.5 * before, (before, after)


def test_bc_trains_the_cnn_policy_on_images(tiny_image_data, tmp_path):
    from embodied_rl.policies import CNNConfig, CNNPolicy

    seed_everything(0)
    with pytest.raises(ValueError, match="image_size=32 is too small for 3 conv layers"):
        CNNConfig(image_size=32)
    policy = CNNPolicy(CNNConfig(image_size=32, channels=(8, 8), hidden=(16,), proprio_dim=0,
                                 action_low=(-1.0,) * 2, action_high=(1.0,) * 2))  # fmt: skip
    config = TrainerConfig(steps=3, **QUIET)
    agent, _ = train("bc", tiny_image_data, tmp_path, trainer_config=config, policy=policy)
    assert agent.step == 3
    assert load_policy(tmp_path / "policy").config.image_size == 32
