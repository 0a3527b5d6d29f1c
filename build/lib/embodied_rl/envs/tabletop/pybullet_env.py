"""The PyBullet backend of the tabletop suite: the MuJoCo scene rebuilt in Bullet.

Each environment owns a private PyBullet client in DIRECT mode and builds its bodies from the
compiled MJCF (:mod:`~embodied_rl.envs.tabletop.pybullet_scene`); images come from the CPU
TinyRenderer with MuJoCo's camera poses, fields of view and clipping planes. Observations,
actions, instructions, rewards and success checks come from :class:`TabletopEnvBase`, so a
policy trained on one backend runs unchanged on the other. docs/environments.md, "PyBullet
twin", lists how the two differ.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np
import pybullet

from embodied_rl.envs.tabletop import tasks
from embodied_rl.envs.tabletop.base import DomainColors, TabletopEnvBase
from embodied_rl.envs.tabletop.pybullet_scene import (
    BulletClient,
    SceneBuilder,
    body_geoms,
    restitution_for_damping_ratio,
    rotation,
    servo_gain,
)
from embodied_rl.envs.tabletop.scene import (
    COLORS,
    FINGER_MAX_OPENING,
    OBJECT_HALF_SIZE,
    SceneConfig,
    build_mjcf,
)

logger = logging.getLogger(__name__)

__all__ = ["PyBulletTabletopEnv"]

FINGER_FORCE_N = 5.0  # squeeze per finger: MuJoCo's finger servo gives ~4 N on a 4 cm object
YAW_TORQUE_NM = 5.0  # MuJoCo's yaw servo has no force limit; this one is never reached
# PyBullet's default is 50, Bullet's 10; 20 matches 50's expert success (100 episodes per
# family, nominal and heavy randomization) at ~1.4x the speed.
SOLVER_ITERATIONS = 20
SIZE_QUANTUM_M = 1e-5  # object shapes are cached per size rounded to this
MAX_DISTANCE_M = 5.0  # a body this far from the table centre has left the scene
MAX_STEP_M = 0.5  # a body moving this far in one control step (25 m/s) has diverged
# TinyRenderer has ambient light plus one directional light; these match the brightness of
# MuJoCo's headlight (ambient 0.45, diffuse 0.5 along the view) plus key light on the table.
LIGHT_AMBIENT, LIGHT_DIFFUSE, LIGHT_SPECULAR = 0.6, 0.55, 0.05
EMPTY_RGB = (0, 0, 0)  # MuJoCo draws empty space black (no skybox); TinyRenderer white
EMPTY_DEPTH = 0.99999  # normalised depth of pixels that hit nothing


def _axis_rotation(axis: int, angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` (rad) about coordinate axis ``axis``."""
    c, s = math.cos(angle), math.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


class PyBulletTabletopEnv(TabletopEnvBase):
    """Language-conditioned tabletop manipulation in PyBullet (see :class:`TabletopEnvBase`).

    Same observations, actions, instructions, cameras and success checks as the MuJoCo
    backend; ``make(task_id, backend="pybullet")`` builds it. ``render_quality`` has no
    effect: TinyRenderer draws without shadows or antialiasing either way.
    """

    backend = "pybullet"

    def __init__(self, task: str = "reach", **kwargs: Any) -> None:
        super().__init__(task, **kwargs)
        cfg = self.config
        self._mj = mujoco.MjModel.from_xml_string(
            build_mjcf(SceneConfig(n_objects=cfg.n_objects, control_yaw=cfg.control_yaw))
        )
        self._dt_s = float(self._mj.opt.timestep)
        self.control_hz = 1.0 / (cfg.n_substeps * self._dt_s)
        # MuJoCo's clipping planes, so near parts of the hand vanish from the wrist camera alike
        extent = float(self._mj.stat.extent)
        self._clip_m = (self._mj.vis.map.znear * extent, self._mj.vis.map.zfar * extent)
        self._nominal_gains = {
            name: servo_gain(self._mj, f"act_{name}")
            for name in ("x", "y", "z", "fingers", *(("yaw",) if cfg.control_yaw else ()))
        }
        self._ee_force_n = float(self._mj.actuator("act_x").forcerange[1])
        self._object_mass_kg = float(self._mj.body("obj0").mass[0])
        self._object_geom = {s: self._mj.geom(f"obj0_{s}").id for s in ("block", "cylinder")}
        self._params: dict[str, float] = dict(self.domain)
        self._colors = self._domain_colors
        self._p: BulletClient | None = BulletClient()
        self.physics_client_id: int = self._p.id  # private to this env
        self._scene = SceneBuilder(self._p, self._mj)
        self._build_world()
        self._cameras = self._camera_poses(self._params)

    @property
    def object_body_ids(self) -> tuple[int, ...]:
        """PyBullet body ids of this episode's objects, by slot (new bodies every reset)."""
        return tuple(self._objects)

    # ------------------------------------------------------------------ world building
    def _build_world(self) -> None:
        """(Re)create every body but the objects, which ``_sim_reset`` creates per episode."""
        p, m, scene = self._p, self._mj, self._scene
        p.resetSimulation()
        # Sorted contact pairs make a step independent of the order bodies were created in.
        p.setPhysicsEngineParameter(
            fixedTimeStep=self._dt_s,
            numSubSteps=0,
            numSolverIterations=SOLVER_ITERATIONS,
            deterministicOverlappingPairs=1,
        )
        self._shape_cache: dict[tuple[str, int], tuple[int, int]] = {}
        self._objects: list[int] = []
        self._object_layout: tasks.Layout | None = None
        self._object_build = (0, 0.0)  # (size key, mass) the object bodies were created with
        # TinyRenderer draws bodies in creation order and shades every fragment that passes
        # the depth test, so near bodies come first and the floor and backdrop last: built
        # the other way round, a 64x64 frame takes 1.6x as long.
        self._gripper = scene.gripper(self.config.control_yaw, gear_force_n=2 * FINGER_FORCE_N)
        self._all_joints = self._gripper.arm_joints + self._gripper.finger_joints
        self._fixtures = {
            name: scene.static_body(body_geoms(m.body(name)), m.body(name).pos, (1, 0, 0, 0), True)
            for name in tasks.FIXTURES
        }
        self._fixture_pos = {name: m.body(name).pos.copy() for name in tasks.FIXTURES}
        world = sorted(body_geoms(m.body("world")), key=lambda g: m.geom(g).name != "table")
        self._statics = {  # table, floor, ...: one fixed body per world geom
            m.geom(g).name: scene.static_body([g], m.geom_pos[g], m.geom_quat[g], False)
            for g in world
        }
        # MuJoCo's friction_scale multiplies objects, fingers and table.
        finger_friction = scene.friction(body_geoms(m.body("finger_left")))
        self._scaled_friction = [
            (self._statics["table"], -1, scene.friction([m.geom("table").id])),
            *((self._gripper.body, j, finger_friction) for j in self._gripper.finger_joints),
        ]
        self._apply_world_params()
        self._world_broken = False
        self._refresh()

    # ------------------------------------------------------------------ objects
    def _object_shape(self, shape: str, size_key: int) -> tuple[int, int]:
        """Collision and visual shape of an object of half size ``size_key * SIZE_QUANTUM_M``
        (cached, so randomized sizes create a bounded number of shapes)."""
        key = (shape, size_key)
        if key not in self._shape_cache:
            gid = self._object_geom[shape]
            scale = size_key * SIZE_QUANTUM_M / float(self._mj.geom_size[gid, 0])
            self._shape_cache[key] = self._scene.shapes([gid], scale)
        return self._shape_cache[key]

    def _spawn_objects(self, layout: tasks.Layout, states: list[tuple] | None = None) -> None:
        """Replace the object bodies by fresh ones for ``layout``: at its poses, or at
        ``states`` (position, orientation, linear and angular velocity per slot).

        Fresh bodies carry no contact cache from earlier episodes, so an episode depends on
        its seed only, as in MuJoCo; a body costs ~0.1 ms to create. Bullet computes the
        inertia from shape and mass at creation (changing the mass later rescales it
        inconsistently), so mass and size changes create new bodies.
        """
        p = self._p
        for body in self._objects:
            p.removeBody(body)
        size_key, mass = self._object_size_and_mass()
        half = size_key * SIZE_QUANTUM_M
        self._objects = []
        for i, shape in enumerate(layout.shapes):
            collision, visual = self._object_shape(shape, size_key)
            if states is None:
                yaw = float(layout.yaws[i])
                pos = (*(float(v) for v in layout.positions[i]), half)
                orn = (0.0, 0.0, math.sin(0.5 * yaw), math.cos(0.5 * yaw))
            else:
                pos, orn = states[i][:2]
            body = p.createMultiBody(mass, collision, visual, pos, orn, useMaximalCoordinates=True)
            if states is not None:
                p.resetBaseVelocity(body, *states[i][2:])
            self._objects.append(body)
        self._object_layout, self._object_build = layout, (size_key, mass)
        self._configure_objects()

    def _configure_objects(self) -> None:
        """Friction, restitution, damping and colour of every object."""
        p, params = self._p, self._params
        # Bullet damps v by (1 - d)^dt per step; MuJoCo's viscous c gives exp(-c dt / m).
        damping = 1.0 - math.exp(-params["object_damping"] / self._object_build[1])
        for i, body in enumerate(self._objects):
            p.changeDynamics(
                body,
                -1,
                lateralFriction=self._scene.object_friction * math.sqrt(params["friction_scale"]),
                restitution=restitution_for_damping_ratio(params["contact_damping_ratio"]),
                linearDamping=damping,
                angularDamping=0.0,
            )
            rgb = np.clip(
                np.array(COLORS[self._object_layout.colors[i]]) + self._colors.objects[i], 0, 1
            )
            p.changeVisualShape(body, -1, rgbaColor=[*rgb.tolist(), 1.0])

    # ------------------------------------------------------------------ domain
    def _sim_apply_domain(self, params: Mapping[str, float], colors: DomainColors) -> None:
        self._params, self._colors = dict(params), colors
        self._apply_world_params()
        self._cameras = self._camera_poses(params)
        if self._objects and self._object_layout is self.layout:  # mid-episode
            if self._object_build != self._object_size_and_mass():
                self._respawn_objects_in_place()
            else:
                self._configure_objects()
        # else: a reset follows and spawns this episode's objects with these parameters

    def _object_size_and_mass(self) -> tuple[int, float]:
        """Object half size (in SIZE_QUANTUM_M) and mass (kg) under the domain parameters."""
        params = self._params
        size_key = round(OBJECT_HALF_SIZE * params["object_size_scale"] / SIZE_QUANTUM_M)
        return size_key, self._object_mass_kg * params["object_mass_scale"]

    def _apply_world_params(self) -> None:
        """Gravity, the friction of table and fingers, servo gains and static colours."""
        p, params, colors = self._p, self._params, self._colors
        p.setGravity(0.0, 0.0, params["gravity_z"])
        root = math.sqrt(params["friction_scale"])  # the product of two bodies scales by s
        for body, link, friction in self._scaled_friction:
            p.changeDynamics(body, link, lateralFriction=friction * root)
        gain = params["actuator_gain_scale"]  # MuJoCo scales the x, y, z servos only
        g = self._nominal_gains
        self._arm_gains = [g["x"] * gain, g["y"] * gain, g["z"] * gain]
        self._arm_forces = [self._ee_force_n] * 3
        if self.config.control_yaw:
            self._arm_gains.append(g["yaw"])
            self._arm_forces.append(YAW_TORQUE_NM)
        for name, body in self._statics.items():
            offset = colors.table if name == "table" else colors.background
            rgb = np.clip(self._mj.geom(name).rgba[:3] + offset, 0, 1)
            p.changeVisualShape(body, -1, rgbaColor=[*rgb.tolist(), 1.0])
        # TinyRenderer's light is directional: it shines from the key light's position.
        key = self._mj.light("key")
        light = key.pos + (params["light_dx"], params["light_dy"], params["light_dz"])
        self._light_direction = (light / max(np.linalg.norm(light), 1e-9)).tolist()
        nominal = float(key.diffuse[0])  # MuJoCo clips the scaled diffuse colour to 1
        scaled = min(max(nominal * params["light_intensity_scale"], 0.0), 1.0)
        self._light_diffuse = LIGHT_DIFFUSE * scaled / nominal

    def _respawn_objects_in_place(self) -> None:
        """New object bodies after a mid-episode size or mass change, keeping their poses
        and velocities."""
        p = self._p
        states = [
            (*p.getBasePositionAndOrientation(b), *p.getBaseVelocity(b)) for b in self._objects
        ]
        self._spawn_objects(self._object_layout, states)
        self._refresh()

    def _camera_poses(
        self, params: Mapping[str, float]
    ) -> dict[str, tuple[np.ndarray, np.ndarray, float, bool]]:
        """Per camera: position, rotation (columns: the camera's x, y, z axes; it looks
        along -z), vertical field of view in degrees, and whether it rides on the hand
        (then the pose is relative to the hand). The camera domain parameters move the
        cameras fixed in the world, as in MuJoCo."""
        m = self._mj
        offset = np.array([params["camera_dx"], params["camera_dy"], params["camera_dz"]])
        pitch = _axis_rotation(0, math.radians(params["camera_pitch_deg"]))  # own x axis
        yaw = _axis_rotation(2, math.radians(params["camera_yaw_deg"]))  # world z axis
        poses = {}
        for cid in range(m.ncam):
            cam = m.camera(cid)
            pos, rot, fovy = cam.pos.copy(), rotation(cam.quat), float(cam.fovy[0])
            on_hand = int(cam.bodyid[0]) != 0
            if not on_hand:
                pos, rot = pos + offset, yaw @ rot @ pitch
                fovy = float(np.clip(fovy + params["camera_fovy_deg"], 5.0, 170.0))
            poses[cam.name] = (pos, rot, fovy, on_hand)
        return poses

    # ------------------------------------------------------------------ primitives
    def _sim_reset(self, layout: tasks.Layout, ee_home: np.ndarray) -> None:
        p = self._p
        if self._world_broken:  # Bullet stops simulating bodies that overflowed
            self._build_world()
        self._spawn_objects(layout)
        for name, xy in (("bowl", layout.bowl_xy), ("plate", layout.plate_xy)):
            self._fixture_pos[name][:2] = xy
            p.resetBasePositionAndOrientation(
                self._fixtures[name], self._fixture_pos[name].tolist(), (0.0, 0.0, 0.0, 1.0)
            )
        home = [*ee_home, *([0.0] if self.config.control_yaw else [])]
        for joint, q in zip(
            self._all_joints, [*home, FINGER_MAX_OPENING, FINGER_MAX_OPENING], strict=True
        ):
            p.resetJointState(self._gripper.body, joint, q, 0.0)
        self._sim_set_controls(ee_home, 0.0, FINGER_MAX_OPENING)
        for _ in range(2 * self.config.n_substeps):  # let contacts settle
            p.stepSimulation()
        self._refresh()

    def _sim_set_controls(
        self, ee_target: np.ndarray, yaw_target: float, finger_opening: float
    ) -> None:
        p, gripper = self._p, self._gripper.body
        targets = [float(ee_target[0]), float(ee_target[1]), float(ee_target[2])]
        if self.config.control_yaw:
            targets.append(float(yaw_target))
        n = len(targets)
        p.setJointMotorControlArray(
            gripper,
            self._gripper.arm_joints,
            pybullet.POSITION_CONTROL,
            targetPositions=targets,
            targetVelocities=[0.0] * n,
            forces=self._arm_forces,
            positionGains=self._arm_gains,
            velocityGains=[1.0] * n,
        )
        gain = self._nominal_gains["fingers"]
        p.setJointMotorControlArray(
            gripper,
            self._gripper.finger_joints,
            pybullet.POSITION_CONTROL,
            targetPositions=[finger_opening, finger_opening],
            targetVelocities=[0.0, 0.0],
            forces=[FINGER_FORCE_N, FINGER_FORCE_N],
            positionGains=[gain, gain],
            velocityGains=[1.0, 1.0],
        )

    def _sim_step(self) -> str | None:
        p = self._p
        for _ in range(self.n_substeps_now):
            p.stepSimulation()
        before = self._points
        self._refresh()
        error = self._divergence(before)
        if error is not None:
            self._world_broken = True
            logger.warning("physics became unstable: %s; truncating the episode", error)
        return error

    def _refresh(self) -> None:
        """Read the gripper joints and object poses once per step (the getters reuse them)."""
        p = self._p
        states = p.getJointStates(self._gripper.body, self._all_joints)
        q = np.array([s[0] for s in states])
        v = np.array([s[1] for s in states])
        self._ee_pos, self._ee_vel = q[:3], v[:3]
        self._yaw = float(q[3]) if self.config.control_yaw else 0.0
        self._opening = float(q[self._gripper.finger_joints[0]])
        poses = np.empty((len(self._objects), 7))
        for i, body in enumerate(self._objects):
            pos, (x, y, z, w) = p.getBasePositionAndOrientation(body)
            poses[i] = (*pos, w, x, y, z)
        self._poses = poses
        self._points = np.vstack([poses[:, :3], q[None, :3]])  # watched for divergence

    def _divergence(self, before: np.ndarray) -> str | None:
        points = self._points
        if not np.isfinite(points).all():
            return "unstable simulation: PyBullet state contains NaN or inf"
        far = float(np.abs(points).max())
        if far > MAX_DISTANCE_M:
            return (
                f"unstable simulation: a body is {far:.3g} m from the table (> {MAX_DISTANCE_M} m)"
            )
        if before.shape == points.shape:
            jump = float(np.abs(points - before).max())
            if jump > MAX_STEP_M:
                return (
                    f"unstable simulation: a body moved {jump:.3g} m in a step (> {MAX_STEP_M} m)"
                )
        return None

    def _sim_ee(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        return self._ee_pos, self._ee_vel, self._opening, self._yaw

    def _sim_object_poses(self) -> np.ndarray:
        return self._poses.copy()

    def _sim_fixture_positions(self) -> tuple[np.ndarray, np.ndarray]:
        return self._fixture_pos["bowl"].copy(), self._fixture_pos["plate"].copy()

    def _sim_render(self, camera: str, size: tuple[int, int], video: bool) -> np.ndarray:
        pos, rot, fovy, on_hand = self._cameras[camera]
        if on_hand:
            hand = _axis_rotation(2, self._yaw)
            pos, rot = self._ee_pos + hand @ pos, hand @ rot
        height, width = size
        view = pybullet.computeViewMatrix(
            pos.tolist(), (pos - rot[:, 2]).tolist(), rot[:, 1].tolist()
        )
        projection = pybullet.computeProjectionMatrixFOV(fovy, width / height, *self._clip_m)
        _, _, rgba, depth, _ = self._p.getCameraImage(
            width,
            height,
            view,
            projection,
            lightDirection=self._light_direction,
            lightColor=[1.0, 1.0, 1.0],
            lightAmbientCoeff=LIGHT_AMBIENT,
            lightDiffuseCoeff=self._light_diffuse,
            lightSpecularCoeff=LIGHT_SPECULAR,
            shadow=0,  # TinyRenderer's shadow map darkens and streaks the scene; no "high"
            renderer=pybullet.ER_TINY_RENDERER,
            flags=pybullet.ER_NO_SEGMENTATION_MASK,
        )
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3].copy()
        rgb[np.asarray(depth).reshape(height, width) >= EMPTY_DEPTH] = EMPTY_RGB
        return rgb

    def close(self) -> None:
        """Disconnect this environment's physics client (idempotent)."""
        if self._p is not None:
            self._p.disconnect()
            self._p = None
        super().close()
