"""Domain randomization: each parameter has its physical effect; seeds reproduce; ADR moves."""

from __future__ import annotations

import numpy as np
import pytest

from embodied_rl.envs import make
from embodied_rl.envs.domain import PARAMETERS, nominal_parameters
from embodied_rl.envs.randomization import (
    ADR,
    PRESETS,
    DomainRandomization,
    RandomizationConfig,
    load_preset,
    resolve_randomization,
)


def base_env(task="push", **domain):
    env = make(f"tabletop/{task}-v0", seed=0).unwrapped
    env.set_domain(domain)
    env.reset(seed=0)
    return env


def object_slide_distance(**domain) -> float:
    """Launch the manipulated object at 0.5 m/s along x and measure how far it slides."""
    env = base_env(**domain)
    slot = env.spec_.object_slot
    dof = env.model.joint(f"obj{slot}_free").dofadr[0]
    start = env.scene_state().object_pos[slot].copy()
    env.data.qvel[dof] = 0.5
    for _ in range(25):
        env.step(np.array([0, 0, 0.3, -1], dtype=np.float32))  # gripper lifts out of the way
    return float(np.linalg.norm(env.scene_state().object_pos[slot, :2] - start[:2]))


def test_presets_load_and_stay_within_parameter_limits():
    for name in PRESETS:
        config = load_preset(name)
        assert config.name == name
    assert set(load_preset("heavy").ranges) == {k for k in PARAMETERS}
    for key, (low, high) in load_preset("default").ranges.items():
        heavy_low, heavy_high = load_preset("heavy").ranges[key]
        assert heavy_low <= low <= high <= heavy_high, key


def test_bad_randomization_configs_name_the_problem():
    with pytest.raises(ValueError, match="frction_scale"):
        RandomizationConfig({"frction_scale": (0.5, 1.5)})
    with pytest.raises(ValueError, match="low must not exceed high"):
        RandomizationConfig({"friction_scale": (2.0, 1.0)})
    with pytest.raises(ValueError, match="must stay within"):
        RandomizationConfig({"friction_scale": (-1.0, 1.0)})
    with pytest.raises(ValueError, match="preset"):
        load_preset("extreme")
    with pytest.raises(ValueError, match="sensor parameters"):
        make("tabletop/reach-v0").unwrapped.set_domain({"obs_noise_std": 0.1})


def test_overrides_replace_or_remove_preset_ranges():
    config = resolve_randomization(
        {"preset": "default", "friction_scale": [0.1, 0.2], "gravity_z": None}
    )
    assert config.ranges["friction_scale"] == (0.1, 0.2)
    assert "gravity_z" not in config.ranges
    assert config.ranges["object_mass_scale"] == load_preset("default").ranges["object_mass_scale"]


def test_same_seed_same_parameters_and_observations():
    def first_episode(seed):
        env = make("tabletop/pick-v0", randomization="heavy", obs_mode="rgb+state", image_size=32)
        obs, info = env.reset(seed=seed)
        for _ in range(5):
            obs, *_ = env.step(np.full(4, 0.5, dtype=np.float32))
        return info["domain"], obs

    (dom_a, obs_a), (dom_b, obs_b), (dom_c, _) = (
        first_episode(3),
        first_episode(3),
        first_episode(4),
    )
    assert dom_a == dom_b and dom_a != dom_c
    np.testing.assert_array_equal(obs_a["image"], obs_b["image"])
    np.testing.assert_array_equal(obs_a["state"], obs_b["state"])


def test_every_n_steps_resamples_mid_episode():
    env = make("tabletop/stack-v0", randomization={"preset": "default", "every_n_steps": 5}, seed=0)
    _, info = env.reset()
    domains = [info["domain"]]
    for _ in range(10):
        domains.append(env.step(np.zeros(4, dtype=np.float32))[-1]["domain"])
    assert domains[0] == domains[4] and domains[4] != domains[5] and domains[5] == domains[9]


def test_higher_friction_shortens_a_slide():
    distances = [object_slide_distance(friction_scale=f) for f in (0.3, 1.0, 2.0)]
    assert distances[0] > distances[1] > distances[2] > 0


def test_object_damping_shortens_a_slide():
    # Low friction so that the slide is long and damping, not friction, decides its length.
    slides = [object_slide_distance(friction_scale=0.1, object_damping=d) for d in (0.0, 0.1, 0.3)]
    assert slides[0] > 1.3 * slides[1] > 1.3 * 1.3 * slides[2] > 0


def test_heavier_object_moves_less_under_the_same_push():
    def displacement(mass_scale):
        env = base_env(object_mass_scale=mass_scale, friction_scale=0.01)
        slot = env.spec_.object_slot
        body = env.model.body(f"obj{slot}").id
        start = env.scene_state().object_pos[slot].copy()
        env.data.xfrc_applied[body, 0] = 2.0  # N along x for one control step
        env.step(np.zeros(4, dtype=np.float32))
        env.data.xfrc_applied[body] = 0.0
        env.step(np.zeros(4, dtype=np.float32))
        return float(env.scene_state().object_pos[slot, 0] - start[0])

    assert displacement(0.5) > 1.6 * displacement(1.0) > 0


def test_gravity_changes_free_fall():
    def height_after_drop(gravity):
        env = base_env(task="pick", gravity_z=gravity)
        slot = env.spec_.object_slot
        adr = env._obj_pose_index[slot, 0]
        env.data.qpos[adr + 2] = 0.2
        for _ in range(4):  # 80 ms: 3.1 cm of free fall at 9.81 m/s^2, 1.0 cm at 3
            env.step(np.array([0, 0, 0, -1], dtype=np.float32))
        return env.scene_state().object_pos[slot, 2]

    assert height_after_drop(-3.0) - height_after_drop(-9.81) == pytest.approx(0.0211, abs=0.004)


def test_contact_damping_ratio_controls_bounce():
    def rebound(ratio):
        env = base_env(task="pick", contact_damping_ratio=ratio)
        slot = env.spec_.object_slot
        adr = env._obj_pose_index[slot, 0]
        env.data.qpos[adr + 2] = 0.08
        heights = []
        for _ in range(15):
            env.step(np.array([0, 0, 0.5, -1], dtype=np.float32))
            heights.append(env.scene_state().object_pos[slot, 2])
        landed = int(np.argmin(heights[:8]))
        return max(heights[landed:]) - min(heights)

    assert rebound(0.1) > rebound(1.0) + 0.001


def test_object_size_scale_raises_resting_height_and_stays_solvable():
    from embodied_rl.envs import make_expert
    from embodied_rl.evaluation.rollout import run_episodes

    assert (
        base_env(task="pick", object_size_scale=1.15).scene_state().object_pos[:, 2].mean() > 0.022
    )
    env = make("tabletop/stack-v0", randomization={"object_size_scale": [1.1, 1.1]}, seed=0)
    results = run_episodes(env, make_expert(env), 4, progress=False)
    assert sum(r.success for r in results) >= 3


@pytest.mark.parametrize(
    ("domain", "expected"),
    [({"actuator_gain_scale": 0.3}, "lag"), ({"control_scale": 0.5}, "half")],
)
def test_actuation_parameters_change_tracking(domain, expected):
    def moved(**params):
        env = base_env(task="reach", **params)
        start = env.scene_state().ee_pos.copy()
        for _ in range(3):
            env.step(np.array([1.0, 0, 0, -1], dtype=np.float32))
        return env.scene_state().ee_pos[0] - start[0]

    nominal, changed = moved(), moved(**domain)
    if expected == "lag":
        assert changed < 0.8 * nominal
    else:
        assert changed == pytest.approx(0.5 * nominal, rel=0.15)


def test_control_jitter_varies_the_physics_time_per_step():
    env = base_env(task="reach", control_jitter=0.5)
    durations = []
    for _ in range(20):
        before = env.data.time
        env.step(np.zeros(4, dtype=np.float32))
        durations.append(round(env.data.time - before, 6))
    assert len(set(durations)) > 2 and min(durations) < 0.02 < max(durations)


@pytest.mark.parametrize(
    "domain",
    [
        {"object_color_jitter": 0.4},
        {"table_color_jitter": 0.3},
        {"background_color_jitter": 0.4},
        {"light_intensity_scale": 0.2},
        {"light_dx": 0.5, "light_dz": -0.5},
        {"camera_dx": 0.03},
        {"camera_pitch_deg": 6.0},
        {"camera_yaw_deg": 6.0},
        {"camera_fovy_deg": 8.0},
    ],
)
def test_visual_parameters_change_the_image_but_not_the_state(domain):
    def observe(**params):
        env = make("tabletop/pick-v0", obs_mode="rgb+state", image_size=48, seed=0).unwrapped
        env.set_domain(params, rng=np.random.default_rng(0))
        obs, _ = env.reset(seed=0)
        env.close()
        return obs

    nominal, changed = observe(), observe(**domain)
    np.testing.assert_allclose(nominal["state"], changed["state"], atol=1e-6)
    assert np.abs(nominal["image"].astype(int) - changed["image"].astype(int)).mean() > 1.0


def test_dimmer_light_darkens_the_image():
    def brightness(scale):
        env = make(
            "tabletop/pick-v0",
            obs_mode="rgb",
            image_size=32,
            randomization={"light_intensity_scale": [scale, scale]},
        )
        return env.reset(seed=0)[0]["image"].mean()

    assert brightness(0.2) < brightness(1.0) - 5


def test_action_latency_delays_the_response_by_k_steps():
    def x_trace(k):
        env = make("tabletop/reach-v0", randomization={"action_latency_steps": [k, k]}, seed=0)
        obs, _ = env.reset(seed=0)
        xs = [obs["state"][0]]
        for t in range(6):
            action = np.array([1.0 if t == 0 else 0.0, 0, 0, -1], dtype=np.float32)
            xs.append(env.step(action)[0]["state"][0])
        return np.diff(xs)

    for k in (0, 1, 3):
        first_move = int(np.argmax(x_trace(k) > 0.004))
        assert first_move == k, (k, x_trace(k))


def test_a_nan_action_is_refused_when_sent_not_when_it_reaches_the_robot():
    env = make("tabletop/reach-v0", randomization={"action_latency_steps": [2, 2]}, seed=0)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="is not finite"):
        env.step(np.array([np.nan, 0, 0, -1], dtype=np.float32))
    env.close()


def test_sensor_noise_perturbs_observations_with_the_given_scale():
    clean = make("tabletop/pick-v0", obs_mode="rgb+state", image_size=32, seed=0)
    noisy = make(
        "tabletop/pick-v0",
        obs_mode="rgb+state",
        image_size=32,
        randomization={"obs_noise_std": [0.01, 0.01], "image_noise_std": [5.0, 5.0]},
        seed=0,
    )
    a, _ = clean.reset(seed=0)
    b, _ = noisy.reset(seed=0)
    assert np.std(b["state"] - a["state"]) == pytest.approx(0.01, rel=0.3)
    assert np.std(b["image"].astype(float) - a["image"].astype(float)) == pytest.approx(
        5.0, rel=0.3
    )


def test_action_noise_changes_the_trajectory():
    def final_ee(randomization):
        env = make("tabletop/reach-v0", randomization=randomization, seed=0)
        env.reset(seed=0)
        for _ in range(10):
            obs, *_ = env.step(np.zeros(4, dtype=np.float32))
        return obs["state"][:3]

    assert np.linalg.norm(final_ee({"action_noise_std": [0.3, 0.3]}) - final_ee(None)) > 0.005


def test_metaworld_accepts_sensor_randomization_only():
    env = make("metaworld/reach-v3", randomization={"obs_noise_std": [0.01, 0.01]}, seed=0)
    obs, info = env.reset()
    assert info["domain"]["obs_noise_std"] == 0.01
    with pytest.raises(ValueError, match="sensor parameters only"):
        make("metaworld/reach-v3", randomization="default")


def test_adr_widens_on_success_and_narrows_on_failure(tmp_path):
    adr = ADR({"friction_scale": (0.5, 2.0)}, n_steps=5, buffer_size=4, boundary_prob=1.0)
    assert adr.ranges()["friction_scale"] == (1.0, 1.0)
    rng = np.random.default_rng(0)
    for _ in range(40):  # everything succeeds: both sides grow to the limits
        _, probe = adr.sample(rng)
        adr.record(probe, True)
    assert adr.ranges()["friction_scale"] == pytest.approx((0.5, 2.0))
    for _ in range(16):  # everything fails: the sides shrink back
        _, probe = adr.sample(rng)
        adr.record(probe, False)
    low, high = adr.ranges()["friction_scale"]
    assert low > 0.5 and high < 2.0
    path = tmp_path / "adr.json"
    adr.save(path)
    restored = ADR.load(path)
    assert restored.state_dict() == adr.state_dict()


def test_adr_in_the_wrapper_learns_from_episode_success():
    adr = ADR({"friction_scale": (0.5, 2.0)}, n_steps=2, buffer_size=2, boundary_prob=1.0)
    env = DomainRandomization(make("tabletop/reach-v0", horizon=3), config=None, seed=0, adr=adr)
    for seed in range(8):  # a do-nothing policy never succeeds: ranges stay nominal
        env.reset(seed=seed)
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(np.zeros(4, dtype=np.float32))
            done = terminated or truncated
    assert adr.ranges()["friction_scale"] == (1.0, 1.0)
    assert adr.n_updates == 0
    assert sum(len(b) for b in adr.buffers.values()) > 0


def test_nominal_parameters_cover_every_group():
    groups = {spec.group for spec in PARAMETERS.values()}
    assert groups == {"physics", "visual", "actuation", "sensor"}
    assert nominal_parameters()["gravity_z"] == pytest.approx(-9.81)
