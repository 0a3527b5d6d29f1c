"""The end-to-end pipeline (a seconds-long config), its resume and its report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embodied_rl.runners.pipeline import Pipeline, smoke_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One smoke run, interrupted after BC and resumed: (run dir, first summaries, second)."""
    out = tmp_path_factory.mktemp("pipeline")
    config = smoke_config()
    first = Pipeline(config, out, progress=False).run(("collect", "bc"))
    marks = {s: (out / s / "stage.json").stat().st_mtime_ns for s in ("collect", "bc")}
    second = Pipeline(config, out, progress=False).run(resume=True)
    return out, first, second, marks


def test_every_stage_finishes_and_resume_skips_finished_ones(run):
    out, first, second, marks = run
    assert list(first) == ["collect", "bc"]
    assert list(second) == ["collect", "bc", "iql", "ppo", "transfer", "report"]
    for stage, mtime in marks.items():  # not rerun
        assert (out / stage / "stage.json").stat().st_mtime_ns == mtime
        assert second[stage] == first[stage]
    assert second["collect"]["episodes"] == 6
    assert second["bc"]["steps"] == 6 and second["iql"]["steps"] == 4
    assert second["ppo"]["env_steps"] >= 32
    for stage in ("bc", "iql", "ppo"):
        assert (out / stage / "policy" / "model.safetensors").exists()
        result = json.loads((out / "transfer" / stage / "transfer.json").read_text())
        assert [t["domain"]["name"] for t in result["targets"]] == ["heavy", "pybullet"]
    assert (out / "transfer" / "ppo" / "sensitivity_friction_scale.png").exists()
    assert (out / "transfer" / "rollouts_ppo.gif").exists()


def test_the_stages_hand_policies_on(run):
    """IQL starts from BC's weights and PPO from IQL's: a few steps move them only a little."""
    import torch

    from embodied_rl.policies import load_policy

    out = run[0]
    bc, iql, ppo = (load_policy(out / s / "policy") for s in ("bc", "iql", "ppo"))
    fresh = type(bc)(bc.config)
    name = "head.proj.weight" if "head.proj.weight" in bc.state_dict() else None
    for key, value in bc.state_dict().items():
        if value.dtype.is_floating_point and value.numel() > 100 and "text" not in key:
            name = key
            break
    assert name is not None

    def dist(a, b):
        return float((a.state_dict()[name] - b.state_dict()[name]).abs().mean())

    assert dist(bc, iql) < dist(bc, fresh) and dist(iql, ppo) < dist(iql, fresh)
    assert not torch.equal(bc.state_dict()[name], fresh.state_dict()[name])


def test_fresh_run_refuses_to_overwrite_and_resume_checks_the_config(run):
    out = run[0]
    with pytest.raises(FileExistsError, match="--resume"):
        Pipeline(smoke_config(), out, progress=False).run()
    with pytest.raises(ValueError, match=r"\['seed'\]"):
        Pipeline(smoke_config(seed=1), out, progress=False).run(resume=True)
    with pytest.raises(ValueError, match="unknown stage"):
        Pipeline(smoke_config(), out, progress=False).run(("collect", "dance"))


def test_report_is_self_contained(run):
    out = run[0]
    page = (out / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 3  # curves, success, sensitivity
    assert "data:image/gif;base64," in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    md = (out / "report" / "report.md").read_text()
    assert "| PPO fine-tuned | pybullet | pybullet | 2 |" in md


def test_report_renders_in_headless_chromium(run, tmp_path, chromium):
    from PIL import Image

    shot = tmp_path / "report.png"
    page = chromium.new_page(viewport={"width": 1100, "height": 800})
    page.goto((run[0] / "report" / "report.html").as_uri())
    heights = page.evaluate("Array.from(document.images).map(i => i.naturalHeight)")
    title = page.locator("h1").inner_text()
    page.screenshot(path=str(shot), full_page=True)
    assert "tabletop/reach-v0" in title
    assert len(heights) >= 5 and min(heights) > 0  # every embedded image decoded
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape[0] > 800 and pixels.std() > 20  # not a blank page
    assert (pixels < 128).mean() > 0.01  # text and plots drawn


def test_ppo_warmup_longer_than_the_stage_is_refused_before_anything_runs():
    from embodied_rl.config import ConfigError
    from embodied_rl.runners.pipeline import load_pipeline_config

    with pytest.raises(
        ConfigError,
        match=r"finetune.value_warmup_steps=1024 must lie in \[0, finetune.env_steps=512\)",
    ):
        load_pipeline_config(overrides=["finetune.env_steps=512"])


def test_policy_overrides_are_checked_when_the_config_loads():
    """A bad VLA key fails before any stage runs (a YAML flow map without a space after the
    colon makes the key 'n_layers:1')."""
    from embodied_rl.config import ConfigError
    from embodied_rl.runners.pipeline import load_pipeline_config

    with pytest.raises(ConfigError, match=r"unknown VLAConfig key\(s\) \['n_layers:1'\]"):
        load_pipeline_config(overrides=["policy.overrides={n_layers:1}"])
    with pytest.raises(ConfigError, match="preset 'rt3'.*choose one of"):
        load_pipeline_config(overrides=["policy.preset=rt3"])
    assert load_pipeline_config(overrides=["policy.overrides={n_layers: 1}"]).policy.overrides


def test_a_pipeline_killed_during_ppo_resumes_to_the_uninterrupted_weights(tmp_path, monkeypatch):
    """Ctrl-C in the third PPO rollout, then ``--resume``: the final PPO policy equals an
    uninterrupted run's, bit for bit (the stages before are shared by copying them)."""
    import dataclasses
    import shutil

    from safetensors.torch import load_file

    from embodied_rl.agents.ppo import PPO

    config = smoke_config()
    config = dataclasses.replace(
        config, finetune=dataclasses.replace(config.finetune, env_steps=160, checkpoint_every=32)
    )  # 32 warm-up steps, then 4 rollouts of 2 x 16
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    Pipeline(config, straight, progress=False).run(("collect", "bc", "iql", "ppo"))
    cut.mkdir()
    for stage in ("collect", "bc", "iql"):
        shutil.copytree(straight / stage, cut / stage)
    shutil.copy(straight / "config.json", cut / "config.json")

    update, calls = PPO.update, []

    def interrupted(self):
        calls.append(1)
        if len(calls) == 4:  # the warm-up's update, then the third rollout's
            raise KeyboardInterrupt
        return update(self)

    monkeypatch.setattr(PPO, "update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Pipeline(config, cut, progress=False).run(("collect", "bc", "iql", "ppo"), resume=True)
    monkeypatch.setattr(PPO, "update", update)
    assert not (cut / "ppo" / "stage.json").exists()
    Pipeline(config, cut, progress=False).run(("collect", "bc", "iql", "ppo"), resume=True)
    a = load_file(straight / "ppo" / "policy" / "model.safetensors")
    b = load_file(cut / "ppo" / "policy" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), err_msg=key)


def test_stage_options_are_checked_when_the_config_loads():
    """``bc.options`` / ``iql.options`` set agent-config fields: typos and wrong types fail
    at load, naming the section."""
    from embodied_rl.config import ConfigError
    from embodied_rl.runners.pipeline import load_pipeline_config

    with pytest.raises(ConfigError, match=r"bc.options: unknown key\(s\) \['labelz'\]"):
        load_pipeline_config(overrides=["bc.options={labelz: expert}"])
    with pytest.raises(ConfigError, match="iql.options: expectile: expected a number"):
        load_pipeline_config(overrides=["iql.options={expectile: high}"])
    config = load_pipeline_config(
        overrides=["iql.options={expectile: 0.9}", "iql.learning_rate=1e-4"]
    )
    iql = config.agent_config("iql")
    assert iql.expectile == 0.9 and iql.actor_learning_rate == 1e-4
