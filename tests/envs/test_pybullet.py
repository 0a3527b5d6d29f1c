"""The PyBullet twin of the tabletop suite: same spaces and tasks as MuJoCo, its own physics."""

from __future__ import annotations

import math

import numpy as np
import pybullet
import pytest
from gymnasium.utils.env_checker import check_env

from embodied_rl.envs import make, make_expert
from embodied_rl.envs.tabletop import tasks
from embodied_rl.envs.tabletop.pybullet_env import PyBulletTabletopEnv
from embodied_rl.envs.tabletop.pybullet_scene import (
    box_mesh,
    cylinder_mesh,
    restitution_for_damping_ratio,
    servo_gain,
)


def pybullet_env(task: str = "pick", **kwargs) -> PyBulletTabletopEnv:
    return make(f"tabletop/{task.replace('_', '-')}-v0", backend="pybullet", **kwargs).unwrapped


def run_expert(env, seed: int) -> tuple[bool, int]:
    """Success and length of one expert episode."""
    expert = make_expert(env)
    obs, _ = env.reset(seed=seed)
    for length in range(1, 1000):
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        if terminated or truncated:
            return info["success"], length
    raise AssertionError("episode never ended")


def idle(env, n_steps: int) -> dict:
    """Hold the gripper still (open) for ``n_steps``; return the last observation."""
    for _ in range(n_steps):
        obs, *_ = env.step(np.array([0, 0, 0, -1], dtype=np.float32))
    return obs


@pytest.mark.parametrize(
    "options",
    [
        {"obs_mode": "state"},
        {"obs_mode": "rgb+state", "camera": ("front", "wrist"), "image_size": 40},
        {"obs_mode": "rgb", "control_yaw": True, "instruction_mode": "tokens", "n_objects": 3},
    ],
)
def test_spaces_and_episodes_match_mujoco(options):
    envs = {
        b: make("tabletop/stack-v0", backend=b, seed=3, **options) for b in ("mujoco", "pybullet")
    }
    mj, pb = envs["mujoco"], envs["pybullet"]
    assert pb.unwrapped.backend == "pybullet"
    assert pb.observation_space == mj.observation_space
    assert pb.action_space == mj.action_space
    (mj_obs, mj_info), (pb_obs, pb_info) = mj.reset(), pb.reset()
    assert pb.observation_space.contains(pb_obs)
    assert pb_info == mj_info  # the same task, instruction and split: sampling is shared
    for key in mj_obs:
        assert np.asarray(pb_obs[key]).dtype == np.asarray(mj_obs[key]).dtype, key
        assert np.shape(pb_obs[key]) == np.shape(mj_obs[key]), key
    if "state" in mj_obs:  # same layout: poses agree to within settling
        np.testing.assert_allclose(pb_obs["state"], mj_obs["state"], atol=0.01)
    for env in envs.values():
        env.close()


def test_gymnasium_env_checker_passes():
    env = pybullet_env("place", obs_mode="rgb+state", render_mode="rgb_array")
    check_env(env, skip_render_check=False)
    env.close()


def test_same_seed_reproduces_50_steps_whatever_came_before():
    actions = np.random.default_rng(0).uniform(-1, 1, size=(50, 4)).astype(np.float32)

    def trace(env, seed):
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for action in actions:
            out.append(env.step(action)[0])
        return out

    first = pybullet_env("push", obs_mode="rgb+state", image_size=32)
    second = pybullet_env("push", obs_mode="rgb+state", image_size=32)
    reference = trace(first, seed=7)
    trace(second, seed=8)  # another episode first: contact caches must not leak into the next
    for a, b in zip(reference, trace(second, seed=7), strict=True):
        assert a["instruction"] == b["instruction"]
        np.testing.assert_array_equal(a["state"], b["state"])
        np.testing.assert_array_equal(a["image"], b["image"])
    first.close()
    second.close()


def test_gripper_tracks_commanded_displacement():
    env = pybullet_env("reach", seed=0)
    env.reset()
    start = env.scene_state().ee_pos
    for _ in range(5):
        env.step(np.array([1.0, 0, 0, -1], dtype=np.float32))
    idle(env, 5)  # let the position controller settle
    moved = env.scene_state().ee_pos - start
    assert moved[0] == pytest.approx(5 * env.config.max_delta_m, abs=0.004)
    assert abs(moved[1]) < 0.003 and abs(moved[2]) < 0.003


def test_control_yaw_turns_the_gripper():
    env = pybullet_env("reach", control_yaw=True, seed=0)
    obs, _ = env.reset()
    for _ in range(10):
        obs, *_ = env.step(np.array([0, 0, 0, 1.0, 0], dtype=np.float32))
    assert obs["state"][7] > 0.5  # sin(yaw), as on MuJoCo


@pytest.mark.parametrize("family", tasks.FAMILIES)
def test_expert_solves_the_family(family):
    """Guard for the >= 90% figure (100 episodes per family in benchmarks/results)."""
    env = pybullet_env(family, seed=0)
    assert sum(run_expert(env, seed=1000 + s)[0] for s in range(10)) >= 9
    env.close()


def test_images_are_upright_and_cameras_differ():
    cameras = ("front", "top", "side", "wrist")
    env = pybullet_env("stack", obs_mode="rgb", camera=cameras, image_size=64, seed=0)
    obs, _ = env.reset()
    front = obs["image_front"].astype(int)
    assert front.std() > 5
    # The table (brown: red > green > blue) fills the bottom rows, not the top ones.
    r, g, b = (front[-8:, :, c].mean() for c in range(3))
    assert r > g + 10 > b + 20
    assert np.abs(front[-8:].mean(axis=(0, 1)) - front[:8].mean(axis=(0, 1))).sum() > 30
    images = [obs[f"image_{c}"].astype(int) for c in cameras]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 5
    env.close()


def slide_distance(friction_scale: float) -> float:
    """How far an object launched at 0.4 m/s along x slides in 0.3 s."""
    env = pybullet_env("reach", n_objects=1, seed=2)
    env.set_domain({"friction_scale": friction_scale})
    env.reset()
    body = env.object_body_ids[0]
    start = env.scene_state().object_pos[0].copy()
    direction = -np.sign(start[0]) or 1.0  # towards the table centre
    pybullet.resetBaseVelocity(
        body, [0.4 * direction, 0, 0], [0, 0, 0], physicsClientId=env.physics_client_id
    )
    idle(env, 15)
    distance = float(np.linalg.norm(env.scene_state().object_pos[0] - start))
    env.close()
    return distance


def test_friction_scale_shortens_a_slide():
    assert slide_distance(2.0) < 0.5 * slide_distance(0.3)


def test_object_size_scale_raises_the_resting_height_now_and_after_reset():
    env = pybullet_env("pick", seed=1)
    env.reset()
    nominal_z = env.scene_state().object_pos[:, 2]
    np.testing.assert_allclose(nominal_z, 0.02, atol=0.002)
    env.set_domain({"object_size_scale": 1.4})  # mid-episode: the objects grow in place
    idle(env, 10)
    np.testing.assert_allclose(env.scene_state().object_pos[:, 2], 0.028, atol=0.002)
    env.reset()
    np.testing.assert_allclose(env.scene_state().object_pos[:, 2], 0.028, atol=0.002)
    env.close()


def test_mass_and_friction_reach_bullet_and_are_idempotent():
    env = pybullet_env("pick", seed=0)
    for _ in range(2):  # applying twice changes nothing
        env.set_domain({"object_mass_scale": 2.0, "friction_scale": 0.25})
        env.reset(seed=0)
        mass, friction = pybullet.getDynamicsInfo(
            env.object_body_ids[0], -1, physicsClientId=env.physics_client_id
        )[:2]
        assert mass == pytest.approx(0.1)
        assert friction == pytest.approx(0.5)  # sqrt(0.25): Bullet multiplies two bodies' values
    env.close()


def rebound_height(contact_damping_ratio: float) -> float:
    """Highest rebound (m) of an object dropped from 10 cm onto the table."""
    env = pybullet_env("reach", n_objects=1, seed=0)
    env.set_domain({"contact_damping_ratio": contact_damping_ratio})
    env.reset()
    client, body, half = env.physics_client_id, env.object_body_ids[0], env.object_half_size
    pybullet.resetBasePositionAndOrientation(
        body, [0.1, -0.05, half + 0.1], [0, 0, 0, 1], physicsClientId=client
    )
    heights = []
    for _ in range(250):
        pybullet.stepSimulation(physicsClientId=client)
        heights.append(pybullet.getBasePositionAndOrientation(body, physicsClientId=client)[0][2])
    landed = int(np.argmax(np.array(heights) < half + 0.001))
    env.close()
    return max(heights[landed:]) - half


def test_lower_contact_damping_ratio_bounces_more():
    assert rebound_height(0.3) > rebound_height(1.0) + 0.003


def test_gravity_and_gain_change_the_motion():
    def drop_height(params):
        env = pybullet_env("reach", n_objects=1, seed=0)
        env.set_domain(params)
        env.reset()
        body = env.object_body_ids[0]
        pybullet.resetBasePositionAndOrientation(
            body, [0.2, -0.2, 0.3], [0, 0, 0, 1], physicsClientId=env.physics_client_id
        )
        idle(env, 10)
        z = env.scene_state().object_pos[0, 2]
        env.close()
        return z

    assert drop_height({"gravity_z": -2.0}) > drop_height({}) + 0.05

    def reach_after_one_step(gain):
        env = pybullet_env("reach", seed=0)
        env.set_domain({"actuator_gain_scale": gain})
        env.reset()
        start = env.scene_state().ee_pos[0]
        env.step(np.array([1.0, 0, 0, -1], dtype=np.float32))
        return env.scene_state().ee_pos[0] - start

    assert reach_after_one_step(0.3) < 0.7 * reach_after_one_step(1.0)


@pytest.mark.parametrize(
    "params",
    [
        {"light_intensity_scale": 0.2},
        {"object_color_jitter": 0.3, "table_color_jitter": 0.3},
        {"camera_dx": 0.05},
        {"camera_pitch_deg": 8.0},
        {"camera_fovy_deg": 10.0},
    ],
)
def test_visual_parameters_change_the_image(params):
    env = pybullet_env("pick", obs_mode="rgb", seed=0)
    nominal, _ = env.reset(seed=0)
    env.set_domain(params, rng=np.random.default_rng(0))
    changed, _ = env.reset(seed=0)
    assert np.abs(changed["image"].astype(int) - nominal["image"]).mean() > 2
    env.set_domain({})
    again, _ = env.reset(seed=0)
    np.testing.assert_array_equal(again["image"], nominal["image"])
    env.close()


def test_domain_randomization_wrapper_runs_on_pybullet():
    env = make("tabletop/place-v0", backend="pybullet", randomization="heavy", seed=0)
    expert = make_expert(env)
    obs, _ = env.reset()
    for _ in range(30):
        obs, *_ = env.step(expert.act(obs))
    assert np.isfinite(obs["state"]).all()
    env.close()


def test_physics_divergence_truncates_with_a_message():
    env = pybullet_env("pick", seed=0)
    env.reset()
    pybullet.resetBaseVelocity(
        env.object_body_ids[0], [1e12] * 3, [0, 0, 0], physicsClientId=env.physics_client_id
    )
    obs, reward, terminated, truncated, info = env.step(np.zeros(4, dtype=np.float32))
    assert truncated and not terminated and reward == 0.0
    assert "unstable" in info["physics_error"]
    assert np.isfinite(obs["state"]).all()
    env.reset()  # the world is rebuilt and usable again
    assert "physics_error" not in env.step(np.zeros(4, dtype=np.float32))[4]
    assert np.isfinite(env.scene_state().object_pos).all()
    env.close()


def test_close_frees_the_physics_client():
    env = pybullet_env("reach")
    client = env.physics_client_id
    env.reset(seed=0)
    assert pybullet.getConnectionInfo(client)["isConnected"]
    env.close()
    assert not pybullet.getConnectionInfo(client)["isConnected"]
    env.close()  # closing twice is fine


def test_make_accepts_every_option_and_rejects_metaworld():
    env = make(
        "tabletop/multitask-v0",
        backend="pybullet",
        obs_mode="rgb",
        image_size=(24, 32),
        camera="top",
        instruction_mode="tokens",
        split="unseen",
        reward_type="dense",
        render_mode="rgb_array",
        render_size=48,
        horizon=3,
        seed=0,
    )
    assert isinstance(env.unwrapped, PyBulletTabletopEnv)
    obs, info = env.reset()
    assert obs["image"].shape == (24, 32, 3) and info["unseen"]
    assert env.render().shape == (48, 48, 3)
    assert [env.step(env.action_space.sample())[3] for _ in range(3)][-1]
    env.close()
    with pytest.raises(ValueError, match="tabletop suite only"):
        make("metaworld/reach-v3", backend="pybullet")


def test_contact_and_servo_conversions():
    assert restitution_for_damping_ratio(1.0) == 0.0
    assert restitution_for_damping_ratio(0.0) == pytest.approx(1.0)
    assert restitution_for_damping_ratio(0.4) == pytest.approx(
        math.exp(-math.pi * 0.4 / math.sqrt(1 - 0.16))
    )
    env = pybullet_env("reach")
    # MuJoCo: kp 1500, joint damping 40, 2 ms steps -> trails a moving target by 40/1500 s.
    assert servo_gain(env._mj, "act_x") == pytest.approx(1500 * 0.002 / 40)
    env.close()


@pytest.mark.parametrize(
    "mesh", [box_mesh(np.array([0.1, 0.2, 0.3])), cylinder_mesh(0.05, 0.003, sides=12)]
)
def test_drawn_meshes_wind_outwards_with_unit_normals(mesh):
    vertices, normals, triangles = mesh
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0)
    for a, b, c in np.reshape(triangles, (-1, 3)):
        face = np.cross(vertices[b] - vertices[a], vertices[c] - vertices[a])
        assert np.linalg.norm(face) > 0
        # counter-clockwise seen from outside: the winding agrees with the vertex normals
        assert face @ normals[a] > 0 and face @ normals[b] > 0 and face @ normals[c] > 0


def test_make_accepts_the_pybullet_gymnasium_id():
    from embodied_rl.envs import make

    env = make("tabletop-pybullet/reach-v0", seed=0)
    assert env.unwrapped.backend == "pybullet"
    env.close()
    with pytest.raises(ValueError, match="runs on pybullet, not backend='other'"):
        make("tabletop-pybullet/reach-v0", backend="other")
