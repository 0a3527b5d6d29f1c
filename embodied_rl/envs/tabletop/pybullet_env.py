"""The PyBullet backend of the tabletop suite: the MuJoCo scene rebuilt in Bullet.

The geometry is read from the compiled MJCF of :func:`~embodied_rl.envs.tabletop.scene.build_mjcf`
(geom sizes, poses, colours and frictions, masses, joint axes, camera poses and fields of view,
the key light, servo gains), so both backends share one scene description. Each environment
owns a private PyBullet client in DIRECT mode; images come from the CPU TinyRenderer.

Bullet solves rigid contacts (an LCP by sequential impulses) where MuJoCo uses soft convex
contacts with elliptic cones, and it multiplies the friction coefficients of the two bodies in
contact where MuJoCo takes the larger; the coefficients below are chosen so that the pairs that
matter (object-table, object-finger, object-object) get MuJoCo's values. docs/environments.md,
"PyBullet twin", lists the remaining differences.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import mujoco
import numpy as np
import pybullet

from embodied_rl.envs.tabletop import tasks
from embodied_rl.envs.tabletop.base import DomainColors, TabletopEnvBase
from embodied_rl.envs.tabletop.scene import (
    COLORS,
    FINGER_MAX_OPENING,
    OBJECT_HALF_SIZE,
    SceneConfig,
    build_mjcf,
)

logger = logging.getLogger(__name__)

__all__ = ["PyBulletTabletopEnv"]

PLANE_HALF_THICKNESS_M = 0.05  # MuJoCo planes become boxes this thick below their surface
CARRIAGE_MASS_KG = 0.01  # the x and y carriages of the gantry (MuJoCo has one gripper body)
FINGER_FORCE_N = 5.0  # squeeze per finger: MuJoCo's finger servo gives ~4 N on a 4 cm object
YAW_TORQUE_NM = 5.0  # MuJoCo's yaw servo has no force limit; this one is never reached
MAX_DISTANCE_M = 5.0  # a body this far from the table centre has left the scene
MAX_STEP_M = 0.5  # a body moving this far in one control step (25 m/s) has diverged
SIZE_QUANTUM_M = 1e-5  # object shapes are cached per size rounded to this
NEAR_M, FAR_M = 0.01, 20.0  # camera clipping planes
# TinyRenderer has ambient light plus one directional light; these match the brightness of
# MuJoCo's headlight (ambient 0.45, diffuse 0.5 along the view) plus key light on the table.
LIGHT_AMBIENT, LIGHT_DIFFUSE, LIGHT_SPECULAR = 0.6, 0.55, 0.05
EMPTY_RGB = (0, 0, 0)  # MuJoCo draws empty space black (no skybox); TinyRenderer white
EMPTY_DEPTH = 0.99999  # normalised depth of pixels that hit nothing

_SHAPE_TYPES = {
    mujoco.mjtGeom.mjGEOM_BOX: pybullet.GEOM_BOX,
    mujoco.mjtGeom.mjGEOM_CYLINDER: pybullet.GEOM_CYLINDER,
    mujoco.mjtGeom.mjGEOM_PLANE: pybullet.GEOM_BOX,
}


def _xyzw(quat_wxyz: Sequence[float]) -> tuple[float, float, float, float]:
    w, x, y, z = (float(v) for v in quat_wxyz)
    return (x, y, z, w)


def _rotation(quat_wxyz: Sequence[float]) -> np.ndarray:
    """3x3 rotation matrix of a MuJoCo quaternion."""
    return np.array(pybullet.getMatrixFromQuaternion(_xyzw(quat_wxyz))).reshape(3, 3)


def _axis_rotation(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _body_geoms(body) -> list[int]:
    """Geom ids of a MuJoCo body (a ``model.body(...)`` view)."""
    return list(range(int(body.geomadr[0]), int(body.geomadr[0] + body.geomnum[0])))


def restitution_for_damping_ratio(ratio: float) -> float:
    """Coefficient of restitution of a spring-damper contact with damping ``ratio``.

    MuJoCo contacts are damped springs; Bullet's are rigid with a restitution coefficient.
    An underdamped oscillator loses ``exp(-pi zeta / sqrt(1 - zeta^2))`` of its speed per
    bounce; a critically damped one (MuJoCo's nominal ratio 1) does not bounce.
    """
    if ratio >= 1.0:
        return 0.0
    return math.exp(-math.pi * ratio / math.sqrt(1.0 - ratio * ratio))


def servo_gain(model: mujoco.MjModel, actuator: str) -> float:
    """Bullet position gain of a joint motor that trails a moving target like MuJoCo's servo.

    A MuJoCo position servo of stiffness ``kp`` on a joint with damping ``b`` trails a target
    moving at speed ``v`` by ``b v / kp``. Bullet's POSITION_CONTROL motor asks each step for
    the joint velocity ``gain * error / dt``: a trail of ``v dt / gain``, equal for
    ``gain = kp dt / b``.
    """
    act = model.actuator(actuator)
    dof = model.jnt_dofadr[model.actuator_trnid[act.id, 0]]
    return float(act.gainprm[0] * model.opt.timestep / model.dof_damping[dof])


class _Client:
    """PyBullet functions bound to one DIRECT-mode physics client.

    Like ``pybullet_utils.bullet_client.BulletClient`` minus its console output on connect;
    bound functions are cached, so a call costs what a plain ``pybullet`` call does.
    """

    id: int = -1  # physics client id; -1 once disconnected

    def __init__(self) -> None:
        self.id = pybullet.connect(pybullet.DIRECT)
        self._pid = os.getpid()

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        bound = functools.partial(getattr(pybullet, name), physicsClientId=self.id)
        setattr(self, name, bound)
        return bound

    def disconnect(self) -> None:
        if self.id >= 0 and self._pid == os.getpid():  # a forked child does not own it
            pybullet.disconnect(physicsClientId=self.id)
        self.id = -1

    def __del__(self) -> None:
        if self.id >= 0:
            with contextlib.suppress(pybullet.error):
                self.disconnect()


class PyBulletTabletopEnv(TabletopEnvBase):
    """Language-conditioned tabletop manipulation in PyBullet (see :class:`TabletopEnvBase`).

    Same observations, actions, instructions, cameras and success checks as the MuJoCo
    backend; ``make(task_id, backend="pybullet")`` builds it.
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
        self._nominal_gains = {
            name: servo_gain(self._mj, f"act_{name}")
            for name in ("x", "y", "z", "fingers", *(("yaw",) if cfg.control_yaw else ()))
        }
        self._ee_force_n = float(self._mj.actuator("act_x").forcerange[1])
        self._object_mass_kg = float(self._mj.body("obj0").mass[0])
        self._object_geom = {s: self._mj.geom(f"obj0_{s}") for s in ("block", "cylinder")}
        # Bullet multiplies the two bodies' coefficients where MuJoCo takes the larger:
        # objects keep MuJoCo's value and every other body max(its value, the objects'),
        # so each contact with an object gets MuJoCo's combined friction.
        self._object_friction = float(self._object_geom["block"].friction[0])
        # MuJoCo's torsional friction (condim 4) is a length, as is Bullet's spinning
        # friction; the square root on both bodies multiplies back to MuJoCo's value.
        self._spin_friction = math.sqrt(float(self._object_geom["block"].friction[1]))
        self._params: dict[str, float] = dict(self.domain)
        self._colors = self._domain_colors
        self._p: _Client | None = _Client()
        self.physics_client_id: int = self._p.id  # private to this env
        self._build_world()
        self._cameras = self._camera_poses(self._params)

    @property
    def object_body_ids(self) -> tuple[int, ...]:
        """PyBullet body ids of this episode's objects, by slot (new bodies every reset)."""
        return tuple(self._objects)

    # ------------------------------------------------------------------ world building
    def _build_world(self) -> None:
        """(Re)create every body but the objects, which ``_sim_reset`` creates per episode."""
        p, m = self._p, self._mj
        p.resetSimulation()
        # Sorted contact pairs make a step independent of the order bodies were created in.
        p.setPhysicsEngineParameter(
            fixedTimeStep=self._dt_s, numSubSteps=0, deterministicOverlappingPairs=1
        )
        self._shape_cache: dict[tuple[str, int], tuple[int, int]] = {}
        self._objects: list[int] = []
        self._object_layout: tasks.Layout | None = None
        self._object_build = (0, 0.0)  # (size key, mass) the object bodies were created with
        world = m.body("world")
        self._statics = {  # table, floor, ...: one fixed body per world geom
            m.geom(g).name: self._static_body([g], m.geom_pos[g], m.geom_quat[g])
            for g in range(world.geomadr[0], world.geomadr[0] + world.geomnum[0])
        }
        self._fixtures = {
            name: self._static_body(_body_geoms(m.body(name)), m.body(name).pos, (1, 0, 0, 0), True)
            for name in tasks.FIXTURES
        }
        self._fixture_pos = {name: m.body(name).pos.copy() for name in tasks.FIXTURES}
        self._build_gripper()
        # Restitution 1 on fixed bodies: Bullet multiplies it with the objects' restitution.
        for body in (self._statics["table"], *self._fixtures.values()):
            p.changeDynamics(
                body,
                -1,
                lateralFriction=self._object_friction,
                spinningFriction=self._spin_friction,
                restitution=1.0,
            )
        table_friction = self._nominal_friction(m.geom("table").id)
        # MuJoCo's friction_scale multiplies objects, fingers and table.
        self._scaled_friction = [
            (self._statics["table"], -1, table_friction),
            *((self._gripper, j, self._finger_friction) for j in self._finger_joints),
        ]
        self._apply_world_params()
        self._world_broken = False
        self._refresh()

    def _nominal_friction(self, geom_id: int) -> float:
        return max(float(self._mj.geom_friction[geom_id, 0]), self._object_friction)

    def _shape_lists(self, geom_ids: Sequence[int], scale: float, local: bool) -> dict[str, list]:
        """Arguments of create{Collision,Visual}ShapeArray for MuJoCo geoms."""
        m = self._mj
        out: dict[str, list] = {k: [] for k in ("types", "half", "radii", "lengths", "pos", "orn")}
        for gid in geom_ids:
            kind, size = m.geom_type[gid], m.geom_size[gid] * scale
            if kind not in _SHAPE_TYPES:
                raise ValueError(
                    f"geom {m.geom(gid).name!r} has MuJoCo type {mujoco.mjtGeom(kind).name}, "
                    "which the PyBullet backend does not translate (box, cylinder, plane)"
                )
            pos = m.geom_pos[gid].copy() if local else np.zeros(3)
            half = size.copy()
            if kind == mujoco.mjtGeom.mjGEOM_PLANE:  # a thick box whose top is the plane
                half[2] = PLANE_HALF_THICKNESS_M
                pos[2] -= PLANE_HALF_THICKNESS_M
            cylinder = kind == mujoco.mjtGeom.mjGEOM_CYLINDER
            out["types"].append(_SHAPE_TYPES[kind])
            out["half"].append([0.0, 0.0, 0.0] if cylinder else half.tolist())
            out["radii"].append(float(size[0]) if cylinder else 0.0)
            out["lengths"].append(2.0 * float(size[1]) if cylinder else 0.0)
            out["pos"].append(pos.tolist())
            out["orn"].append(_xyzw(m.geom_quat[gid]) if local else (0.0, 0.0, 0.0, 1.0))
        return out

    def _shapes(
        self, geom_ids: Sequence[int], scale: float = 1.0, local: bool = True
    ) -> tuple[int, int]:
        """Collision and visual shape of the given geoms (frames relative to their body when
        ``local``); geoms that never collide in MuJoCo get a visual shape only."""
        p, m = self._p, self._mj
        colliding = [g for g in geom_ids if m.geom_contype[g] or m.geom_conaffinity[g]]
        collision = -1
        if colliding:
            s = self._shape_lists(colliding, scale, local)
            collision = p.createCollisionShapeArray(
                s["types"],
                halfExtents=s["half"],
                radii=s["radii"],
                lengths=s["lengths"],
                collisionFramePositions=s["pos"],
                collisionFrameOrientations=s["orn"],
            )
        s = self._shape_lists(geom_ids, scale, local)
        visual = p.createVisualShapeArray(
            s["types"],
            halfExtents=s["half"],
            radii=s["radii"],
            lengths=s["lengths"],
            visualFramePositions=s["pos"],
            visualFrameOrientations=s["orn"],
        )
        return collision, visual

    def _static_body(
        self, geom_ids: list[int], pos: Sequence[float], quat: Sequence[float], local: bool = False
    ) -> int:
        """A fixed body of MuJoCo geoms, coloured like the first of them."""
        collision, visual = self._shapes(geom_ids, local=local)
        body = self._p.createMultiBody(
            0.0, collision, visual, list(pos), _xyzw(quat), useMaximalCoordinates=True
        )
        self._p.changeVisualShape(body, -1, rgbaColor=self._mj.geom_rgba[geom_ids[0]].tolist())
        return body

    def _build_gripper(self) -> None:
        """The gantry as one multibody: a fixed base, prismatic x, y, z carriages (then a yaw
        hinge), the hand (palm and mast) on the last of them and two prismatic fingers."""
        p, m = self._p, self._mj
        arm = ["ee_x", "ee_y", "ee_z", *(["ee_yaw"] if self.config.control_yaw else [])]
        # (joint, MuJoCo body the link carries or None for a bare carriage, 1-based parent)
        chain = [(name, "gripper" if k == len(arm) - 1 else None, k) for k, name in enumerate(arm)]
        chain += [(finger, finger, len(arm)) for finger in ("finger_left", "finger_right")]
        links = [self._link(joint, body, parent) for joint, body, parent in chain]
        self._gripper = p.createMultiBody(
            0.0,
            -1,
            -1,
            m.body("gripper").pos.tolist(),
            **{key: [link[key] for link in links] for key in links[0]},
        )
        self._arm_joints = list(range(len(arm)))  # x, y, z[, yaw]
        self._finger_joints = [len(arm), len(arm) + 1]  # left, right
        self._all_joints = self._arm_joints + self._finger_joints
        p.changeDynamics(self._gripper, -1, linearDamping=0.0, angularDamping=0.0)
        for link, (_, body, _) in enumerate(chain):
            if body is None:
                continue
            geoms = _body_geoms(m.body(body))
            p.changeDynamics(
                self._gripper,
                link,
                lateralFriction=max(self._nominal_friction(g) for g in geoms),
                spinningFriction=self._spin_friction,
            )
            p.changeVisualShape(self._gripper, link, rgbaColor=m.geom_rgba[geoms[0]].tolist())
        self._finger_friction = self._nominal_friction(m.geom("finger_left").id)
        for link in self._finger_joints:
            p.changeDynamics(
                self._gripper, link, jointLowerLimit=0.0, jointUpperLimit=FINGER_MAX_OPENING
            )
        # MuJoCo couples the fingers with an equality constraint; a gear (ratio -1 between
        # the two opening joints) does it here.
        gear = p.createConstraint(
            self._gripper,
            self._finger_joints[0],
            self._gripper,
            self._finger_joints[1],
            pybullet.JOINT_GEAR,
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0],
        )
        p.changeConstraint(gear, gearRatio=-1.0, erp=0.2, maxForce=2 * FINGER_FORCE_N)

    def _link(self, joint: str, body: str | None, parent: int) -> dict[str, Any]:
        """createMultiBody's per-link arguments for a MuJoCo joint and the body it moves."""
        m = self._mj
        collision, visual = self._shapes(_body_geoms(m.body(body))) if body else (-1, -1)
        hinge = m.joint(joint).type[0] == mujoco.mjtJoint.mjJNT_HINGE
        return {
            "linkMasses": float(m.body(body).mass[0]) if body else CARRIAGE_MASS_KG,
            "linkCollisionShapeIndices": collision,
            "linkVisualShapeIndices": visual,
            # The arm joints all sit at the gripper's origin; fingers at their body's offset.
            "linkPositions": m.body(body).pos.tolist() if body and parent else [0.0] * 3,
            "linkOrientations": [0.0, 0.0, 0.0, 1.0],
            "linkInertialFramePositions": [0.0, 0.0, 0.0],
            "linkInertialFrameOrientations": [0.0, 0.0, 0.0, 1.0],
            "linkParentIndices": parent,
            "linkJointTypes": pybullet.JOINT_REVOLUTE if hinge else pybullet.JOINT_PRISMATIC,
            "linkJointAxis": m.joint(joint).axis.tolist(),
        }

    # ------------------------------------------------------------------ objects
    def _object_shape(self, shape: str, size_key: int) -> tuple[int, int]:
        """Collision and visual shape of an object of half size ``size_key * SIZE_QUANTUM_M``
        (cached, so randomized sizes create a bounded number of shapes)."""
        key = (shape, size_key)
        if key not in self._shape_cache:
            geom = self._object_geom[shape]
            scale = size_key * SIZE_QUANTUM_M / float(geom.size[0])
            self._shape_cache[key] = self._shapes([geom.id], scale)
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
                lateralFriction=self._object_friction * math.sqrt(params["friction_scale"]),
                spinningFriction=self._spin_friction,
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
            pos, rot, fovy = cam.pos.copy(), _rotation(cam.quat), float(cam.fovy[0])
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
            p.resetJointState(self._gripper, joint, q, 0.0)
        self._sim_set_controls(ee_home, 0.0, FINGER_MAX_OPENING)
        for _ in range(2 * self.config.n_substeps):  # let contacts settle
            p.stepSimulation()
        self._refresh()

    def _sim_set_controls(
        self, ee_target: np.ndarray, yaw_target: float, finger_opening: float
    ) -> None:
        p, gripper = self._p, self._gripper
        targets = [float(ee_target[0]), float(ee_target[1]), float(ee_target[2])]
        if self.config.control_yaw:
            targets.append(float(yaw_target))
        n = len(targets)
        p.setJointMotorControlArray(
            gripper,
            self._arm_joints,
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
            self._finger_joints,
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
        states = p.getJointStates(self._gripper, self._all_joints)
        q = np.array([s[0] for s in states])
        v = np.array([s[1] for s in states])
        self._ee_pos, self._ee_vel = q[:3], v[:3]
        self._yaw = float(q[3]) if self.config.control_yaw else 0.0
        self._opening = float(q[self._finger_joints[0]])
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
        projection = pybullet.computeProjectionMatrixFOV(fovy, width / height, NEAR_M, FAR_M)
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
            shadow=int(self.config.render_quality == "high"),
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
