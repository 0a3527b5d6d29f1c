import json
import math

import numpy as np
import pytest

from embodied_rl.cli import main
from embodied_rl.evaluation.transfer import Domain, evaluate_transfer, parse_domain, wilson_interval


def test_wilson_interval_matches_reference_values():
    # Reference values of the Wilson score interval (z = 1.96).
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(0, 20)[1] == pytest.approx(
        0.1611, abs=1e-4
    )
    assert wilson_interval(20, 20)[1] == 1.0
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_parse_domain():
    d = parse_domain("pybullet+heavy+friction_scale=0.5,object_mass_scale=2", "tabletop/pick-v0")
    assert d.backend == "pybullet"
    assert d.randomization == {
        "preset": "heavy",
        "friction_scale": (0.5, 0.5),
        "object_mass_scale": (2.0, 2.0),
    }
    assert parse_domain("nominal", "tabletop/pick-v0").randomization is None
    with pytest.raises(ValueError, match="unknown parameter 'fricton'"):
        parse_domain("fricton=0.5", "tabletop/pick-v0")
    with pytest.raises(ValueError, match="cannot read 'isaac'"):
        parse_domain("isaac", "tabletop/pick-v0")


def test_transfer_gap_sweep_and_outputs(tmp_path):
    report = evaluate_transfer(
        "expert",
        "nominal",
        ["action_latency_steps=3"],
        task_id="tabletop/push-v0",
        episodes=6,
        seed=0,  # scenes where 3 steps of latency defeat the expert
        sweeps={"control_scale": [0.3, 1.0]},
        out=tmp_path,
        progress=False,
    )
    assert report.source.success_rate >= 5 / 6
    target = report.targets[0]
    # The closed-loop expert is not built for delayed actions: a large, real gap.
    assert target.gap == pytest.approx(report.source.success_rate - target.success_rate)
    assert target.gap > 0.3
    sweep = report.sweeps["control_scale"]
    assert [r.domain.randomization["control_scale"] for r in sweep] == [(0.3, 0.3), (1.0, 1.0)]
    data = json.loads((tmp_path / "transfer.json").read_text())
    assert data["targets"][0]["successes"] == target.successes
    assert "| action_latency_steps=3 | mujoco | 6 |" in (tmp_path / "transfer.md").read_text()
    for name in ("transfer.png", "sensitivity_control_scale.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _zero_policy(obs):
    return np.zeros(4, dtype=np.float32)


def test_parallel_workers_give_the_same_result_as_one():
    domains = [Domain("nominal", "tabletop/reach-v0"), parse_domain("heavy", "tabletop/reach-v0")]
    kwargs = dict(
        policy="expert", source=domains[0], targets=[domains[1]], episodes=4, progress=False
    )
    one = evaluate_transfer(workers=1, **kwargs)
    two = evaluate_transfer(workers=2, **kwargs)
    assert one.to_dict() == two.to_dict()


def test_callable_policies_and_unpicklable_ones():
    report = evaluate_transfer(
        _zero_policy, "nominal", ["light"], task_id="tabletop/reach-v0", episodes=2, progress=False
    )
    assert report.source.success_rate == 0.0 and math.isfinite(report.source.mean_return)
    with pytest.raises(ValueError, match="picklable"):
        evaluate_transfer(
            lambda obs: np.zeros(4),
            "nominal",
            ["light"],
            task_id="tabletop/reach-v0",
            episodes=2,
            workers=2,
            progress=False,
        )


def test_cli_transfer(tmp_path, capsys):
    code = main(
        [
            "transfer",
            "--task",
            "tabletop/reach-v0",
            "--targets",
            "light",
            "--episodes",
            "2",
            "--sweep",
            "friction_scale=0.5,1",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert "| light | mujoco | 2 |" in capsys.readouterr().out
    assert (tmp_path / "sensitivity_friction_scale.png").exists()
