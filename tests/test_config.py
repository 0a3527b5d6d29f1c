"""Typed configs: YAML + key=value overrides, errors that name the key."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from embodied_rl.config import CONFIG_DIR, ConfigError, as_dict, load_config, parse_overrides


@dataclass(frozen=True)
class Inner:
    steps: int = 10
    lr: float = 1e-3
    hidden: tuple[int, ...] = (64, 64)


@dataclass(frozen=True)
class Outer:
    name: str = "run"
    seed: int = 0
    target: float | None = None
    flag: bool = False
    inner: Inner = Inner()
    sweeps: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ValueError(f"seed={self.seed} must be >= 0")


def test_yaml_and_overrides_merge_with_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\ninner:\n  steps: 5\n  hidden: [8, 8]\nsweeps:\n  x: [1, 2.5]\n")
    config = load_config(Outer, path, ["inner.lr=0.1", "target=2", "flag=true"])
    assert config == Outer(
        name="a", target=2.0, flag=True, inner=Inner(steps=5, lr=0.1, hidden=(8, 8)),
        sweeps={"x": (1.0, 2.5)},
    )  # fmt: skip
    assert isinstance(config.target, float) and isinstance(config.inner.hidden, tuple)
    assert as_dict(config)["inner"] == {"steps": 5, "lr": 0.1, "hidden": [8, 8]}
    assert load_config(Outer, path, ["target=null"]).target is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["inner.stepz=3"], r"unknown key\(s\) \['inner.stepz'\]"),
        (["inner.steps=ten"], "inner.steps: expected an integer, got 'ten'"),
        (["inner.steps=1.5"], "inner.steps: expected an integer"),
        (["flag=1"], "flag: expected true or false"),
        (["inner.hidden=[8, x]"], r"inner.hidden\[1\]: expected an integer"),
        (["inner=3"], "inner: expected a section"),
        (["seed=-1"], "seed=-1 must be >= 0"),
        (["nokey"], "expected key=value"),
    ],
)
def test_bad_keys_and_types_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, None, overrides)


def test_numbers_read_as_python_reads_them(tmp_path):
    """YAML 1.1 takes 1e-5 for a string; configs and overrides read it as a float."""
    path = tmp_path / "c.yaml"
    path.write_text("target: 1e-5\ninner:\n  lr: 2E-3\n")
    config = load_config(Outer, path, ["inner.lr=1e-4", "name=1e5x"])
    assert config.target == 1e-5 and config.inner.lr == 1e-4 and config.name == "1e5x"
    assert parse_overrides(["a=.5", "b=5.", "c=1_000", "d=-3e2"]) == {
        "a": 0.5, "b": 5.0, "c": 1000, "d": -300.0,
    }  # fmt: skip


def test_a_wrong_override_is_blamed_not_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  steps: 5\n")
    with pytest.raises(ConfigError, match=r"^override \(inner.steps=ten\): inner.steps"):
        load_config(Outer, path, ["inner.steps=ten"])
    path.write_text("inner:\n  steps: five\n")
    with pytest.raises(ConfigError, match=r"c.yaml: inner.steps: expected an integer"):
        load_config(Outer, path, ["inner.lr=0.1"])


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(Outer, tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Outer, tmp_path / "list.yaml")


def test_parse_overrides_builds_sections():
    assert parse_overrides(["a.b.c=1", "a.d=[1, 2]", "e=x"]) == {
        "a": {"b": {"c": 1}, "d": [1, 2]},
        "e": "x",
    }


def test_the_shipped_pipeline_and_agent_configs_load():

    import yaml

    from embodied_rl.agents import agent_class
    from embodied_rl.agents.base import config_from_dict
    from embodied_rl.agents.ppo import PPOConfig
    from embodied_rl.runners.pipeline import DEFAULT_CONFIG, load_pipeline_config

    assert load_pipeline_config(DEFAULT_CONFIG).task.startswith("tabletop/")
    for path in (CONFIG_DIR / "agents").glob("*.yaml"):
        cls = PPOConfig if path.stem == "ppo" else agent_class(path.stem).config_class
        values = yaml.safe_load(path.read_text()) or {}
        config_from_dict(cls, values, str(path))
        # a value equal to the dataclass default would silently undo a change of that default
        same = [k for k, v in values.items() if getattr(cls(), k) == v]
        assert not same, f"{path.name} repeats the defaults of {same}"
        commented = [line[2:] for line in path.read_text().splitlines() if line.startswith("# ")]
        examples = {}  # the commented examples, together, are a valid config too
        for line in commented:
            key, sep, value = line.partition(":")
            if sep and key.isidentifier() and key in {f.name for f in dataclasses.fields(cls)}:
                examples.update(yaml.safe_load(f"{key}:{value.split('#')[0]}"))
        assert examples, f"{path.name} shows no example"
        config_from_dict(cls, examples, str(path))


def test_renamed_keys_still_load_with_a_warning(tmp_path):
    """Configs, overrides and checkpoints written before the 0.2 renames keep working."""
    from embodied_rl.agents.bc import BCConfig
    from embodied_rl.agents.cql import CQLConfig
    from embodied_rl.agents.finetune import PPOFinetuneConfig
    from embodied_rl.runners.pipeline import load_pipeline_config

    path = tmp_path / "old.yaml"
    path.write_text("lr: 1.0e-4\n")
    with pytest.warns(FutureWarning, match="lr is now called learning_rate"):
        assert load_config(BCConfig, path).learning_rate == 1e-4
    with pytest.warns(FutureWarning, match="critic_lr is now called critic_learning_rate"):
        assert load_config(CQLConfig, None, ["critic_lr=1e-3"]).critic_learning_rate == 1e-3
    with pytest.warns(FutureWarning, match="total_steps is now called env_steps"):
        assert load_config(PPOFinetuneConfig, None, ["total_steps=64"]).env_steps == 64
    with pytest.warns(FutureWarning, match="ppo.steps is now called finetune.env_steps"):
        assert load_pipeline_config(overrides=["ppo.steps=2048"]).finetune.env_steps == 2048
    with pytest.warns(FutureWarning, match="ppo.n_envs is now called finetune.n_envs"):
        config = load_pipeline_config(overrides=["ppo.n_envs=2", "ppo.kl_coef=0.05"])
    assert config.finetune.n_envs == 2 and config.ppo.kl_coef == 0.05  # PPOConfig's own key
    with pytest.raises(ConfigError, match="ppo.n_envs and finetune.n_envs name the same value"):
        load_pipeline_config(overrides=["ppo.n_envs=2", "finetune.n_envs=3"])
    with pytest.raises(ConfigError, match="lr and learning_rate name the same value"):
        load_config(BCConfig, None, ["lr=1e-4", "learning_rate=1e-3"])
    # a field that is really called lr is never renamed
    assert load_config(Outer, None, ["inner.lr=0.5"]).inner.lr == 0.5
