"""Bullet bodies from the compiled tabletop MJCF, for the PyBullet backend.

:class:`SceneBuilder` reads geom sizes, poses, colours and frictions, masses and joint axes
from the ``mujoco.MjModel`` that :func:`~embodied_rl.envs.tabletop.scene.build_mjcf`
compiles, so both backends share one scene description. It also holds the translations
between the two contact models: Bullet multiplies the friction coefficients of the two bodies
in contact where MuJoCo takes the larger, and its contacts are rigid with a restitution
coefficient where MuJoCo's are damped springs.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np
import pybullet

PLANE_HALF_THICKNESS_M = 0.05  # a MuJoCo plane collides as a box this thick below it
CARRIAGE_MASS_KG = 0.01  # the x and y carriages of the gantry (MuJoCo has one gripper body)
CYLINDER_SIDES = 16  # facets of drawn cylinders (MuJoCo's fast render quality uses 12)

_BOX, _CYLINDER, _PLANE = (
    mujoco.mjtGeom.mjGEOM_BOX,
    mujoco.mjtGeom.mjGEOM_CYLINDER,
    mujoco.mjtGeom.mjGEOM_PLANE,
)


def xyzw(quat_wxyz: Sequence[float]) -> tuple[float, float, float, float]:
    """A MuJoCo quaternion ``(w, x, y, z)`` in Bullet's order."""
    w, x, y, z = (float(v) for v in quat_wxyz)
    return (x, y, z, w)


def rotation(quat_wxyz: Sequence[float]) -> np.ndarray:
    """3x3 rotation matrix of a MuJoCo quaternion."""
    return np.array(pybullet.getMatrixFromQuaternion(xyzw(quat_wxyz))).reshape(3, 3)


def body_geoms(body) -> list[int]:
    """Geom ids of a MuJoCo body (a ``model.body(...)`` view)."""
    return list(range(int(body.geomadr[0]), int(body.geomadr[0] + body.geomnum[0])))


def restitution_for_damping_ratio(ratio: float) -> float:
    """Coefficient of restitution of a spring-damper contact with damping ``ratio``.

    An underdamped oscillator keeps ``exp(-pi zeta / sqrt(1 - zeta^2))`` of its speed per
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


def box_mesh(half: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Vertices ``(24, 3)``, normals ``(24, 3)`` and triangles of a box of half extents
    ``half``: four vertices per face carrying the face normal, so faces shade flat."""
    vertices, normals, triangles = [], [], []
    for axis in range(3):
        u, v = (axis + 1) % 3, (axis + 2) % 3
        for sign in (1, -1):  # corners run counter-clockwise seen from outside
            base, normal = len(vertices), sign * np.eye(3)[axis]
            for a, b in [(-1, -1), (1, -1), (1, 1), (-1, 1)][::sign]:
                corner = normal * half[axis]
                corner[u], corner[v] = a * half[u], b * half[v]
                vertices.append(corner)
                normals.append(normal)
            triangles += [base, base + 1, base + 2, base, base + 2, base + 3]
    return np.array(vertices), np.array(normals), triangles


def cylinder_mesh(
    radius: float, half_height: float, sides: int = CYLINDER_SIDES
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """A z-axis cylinder with radial normals on the side and axial ones on flat caps.

    TinyRenderer's own cylinder gives every vertex a normal pointing away from the centre,
    which shades a flat plate like a dome.
    """
    k = np.arange(sides)
    nxt = (k + 1) % sides
    angle = 2 * np.pi * k / sides
    ring = np.stack([np.cos(angle), np.sin(angle), np.zeros(sides)], axis=1)
    up = np.array([0.0, 0.0, half_height])
    vertices, normals = [radius * ring - up, radius * ring + up], [ring, ring]
    triangles = np.stack([k, nxt, sides + nxt, k, sides + nxt, sides + k], axis=1).ravel().tolist()
    for sign in (1, -1):  # caps: a fan around the centre
        centre = 2 * sides + (0 if sign > 0 else sides + 1)
        vertices += [sign * up[None], radius * ring + sign * up]
        normals += [np.tile([0.0, 0.0, sign], (sides + 1, 1))]
        fan = np.stack([np.full(sides, centre), centre + 1 + k, centre + 1 + nxt], axis=1)
        triangles += (fan if sign > 0 else fan[:, [0, 2, 1]]).ravel().tolist()
    return np.concatenate(vertices), np.concatenate(normals), triangles


def _plane_mesh(half: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """A MuJoCo plane is drawn from above only: one quad."""
    corners = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]]) * [*half[:2], 0.0]
    return corners, np.tile([0.0, 0.0, 1.0], (4, 1)), [0, 1, 2, 0, 2, 3]


class BulletClient:
    """PyBullet functions bound to one DIRECT-mode physics client (never the global one).

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


@dataclass(frozen=True)
class Gripper:
    """The gantry multibody and its joint indices."""

    body: int
    arm_joints: list[int]  # x, y, z[, yaw]
    finger_joints: list[int]  # left, right (opening per finger, coupled by a gear)


class SceneBuilder:
    """Creates Bullet bodies that mirror bodies and geoms of the compiled MJCF."""

    def __init__(self, client: BulletClient, model: mujoco.MjModel) -> None:
        self.p, self.m = client, model
        block = model.geom("obj0_block")
        # Bullet multiplies the two bodies' coefficients where MuJoCo takes the larger:
        # objects keep MuJoCo's value and every other body max(its value, the objects'),
        # so each contact with an object gets MuJoCo's combined friction.
        self.object_friction = float(block.friction[0])
        # MuJoCo's torsional friction (condim 4) is a length, as is Bullet's spinning
        # friction; the square root on both bodies multiplies back to MuJoCo's value.
        self.spin_friction = math.sqrt(float(block.friction[1]))

    def friction(self, geom_ids: Sequence[int]) -> float:
        """Bullet sliding friction of a body made of these geoms (see ``__init__``)."""
        return max(max(float(self.m.geom_friction[g, 0]) for g in geom_ids), self.object_friction)

    def _geom(self, gid: int, scale: float) -> tuple[int, np.ndarray]:
        """Type and scaled size of a geom the backend translates."""
        kind = self.m.geom_type[gid]
        if kind not in (_BOX, _CYLINDER, _PLANE):
            raise ValueError(
                f"geom {self.m.geom(gid).name!r} has MuJoCo type {mujoco.mjtGeom(kind).name}; "
                "the PyBullet backend translates boxes, cylinders and planes"
            )
        return kind, self.m.geom_size[gid] * scale

    def shapes(
        self, geom_ids: Sequence[int], scale: float = 1.0, local: bool = True
    ) -> tuple[int, int]:
        """Collision and visual shape of MuJoCo geoms, placed relative to their body when
        ``local``; geoms that never collide in MuJoCo get a visual shape only.

        The visual is one mesh with explicit normals (see :func:`cylinder_mesh`); a plane
        collides as a thick box below it and is drawn as a single quad, since TinyRenderer
        rasterises hidden faces too.
        """
        m = self.m
        colliding = [g for g in geom_ids if m.geom_contype[g] or m.geom_conaffinity[g]]
        collision = self._collision_shape(colliding, scale, local) if colliding else -1
        meshes = {_BOX: box_mesh, _PLANE: _plane_mesh, _CYLINDER: lambda s: cylinder_mesh(*s[:2])}
        vertices, normals, triangles = [], [], []
        for gid in geom_ids:
            kind, size = self._geom(gid, scale)
            v, n, t = meshes[kind](size)
            if local:
                rot = rotation(m.geom_quat[gid])
                v, n = v @ rot.T + m.geom_pos[gid], n @ rot.T
            triangles += [len(vertices) + i for i in t]
            vertices += v.tolist()
            normals += n.tolist()
        visual = self.p.createVisualShape(
            pybullet.GEOM_MESH, vertices=vertices, indices=triangles, normals=normals
        )
        return collision, visual

    def _collision_shape(self, geom_ids: Sequence[int], scale: float, local: bool) -> int:
        types, half_extents, radii, lengths, positions, orientations = [], [], [], [], [], []
        for gid in geom_ids:
            kind, size = self._geom(gid, scale)
            pos = self.m.geom_pos[gid].copy() if local else np.zeros(3)
            half = size.copy()
            if kind == _PLANE:  # a thick box whose top is the plane
                half[2] = PLANE_HALF_THICKNESS_M
                pos[2] -= PLANE_HALF_THICKNESS_M
            cylinder = kind == _CYLINDER
            types.append(pybullet.GEOM_CYLINDER if cylinder else pybullet.GEOM_BOX)
            half_extents.append([0.0, 0.0, 0.0] if cylinder else half.tolist())
            radii.append(float(size[0]) if cylinder else 0.0)
            lengths.append(2.0 * float(size[1]) if cylinder else 0.0)
            positions.append(pos.tolist())
            orientations.append(xyzw(self.m.geom_quat[gid]) if local else (0, 0, 0, 1))
        return self.p.createCollisionShapeArray(
            types,
            halfExtents=half_extents,
            radii=radii,
            lengths=lengths,
            collisionFramePositions=positions,
            collisionFrameOrientations=orientations,
        )

    def static_body(
        self, geom_ids: list[int], pos: Sequence[float], quat: Sequence[float], local: bool
    ) -> int:
        """A fixed body of MuJoCo geoms, coloured like the first of them. Restitution 1:
        Bullet multiplies it with the objects' own, which the domain parameters set."""
        p = self.p
        collision, visual = self.shapes(geom_ids, local=local)
        body = p.createMultiBody(
            0.0, collision, visual, list(pos), xyzw(quat), useMaximalCoordinates=True
        )
        p.changeVisualShape(body, -1, rgbaColor=self.m.geom_rgba[geom_ids[0]].tolist())
        p.changeDynamics(
            body,
            -1,
            lateralFriction=self.friction(geom_ids),
            spinningFriction=self.spin_friction,
            restitution=1.0,
        )
        return body

    def gripper(self, control_yaw: bool, gear_force_n: float) -> Gripper:
        """The gantry as one multibody: a fixed base, prismatic x, y, z carriages (then a
        yaw hinge), the hand (palm and mast) on the last of them and two prismatic fingers
        coupled by a gear, as MuJoCo couples them with an equality constraint."""
        p, m = self.p, self.m
        arm = ["ee_x", "ee_y", "ee_z", *(["ee_yaw"] if control_yaw else [])]
        # (joint, MuJoCo body the link carries or None for a bare carriage, 1-based parent)
        chain = [(name, "gripper" if k == len(arm) - 1 else None, k) for k, name in enumerate(arm)]
        chain += [(finger, finger, len(arm)) for finger in ("finger_left", "finger_right")]
        links = [self._link(joint, body, parent) for joint, body, parent in chain]
        gripper = Gripper(
            body=p.createMultiBody(
                0.0,
                -1,
                -1,
                m.body("gripper").pos.tolist(),
                **{key: [link[key] for link in links] for key in links[0]},
            ),
            arm_joints=list(range(len(arm))),
            finger_joints=[len(arm), len(arm) + 1],
        )
        p.changeDynamics(gripper.body, -1, linearDamping=0.0, angularDamping=0.0)
        for link, (_, body, _) in enumerate(chain):
            if body is not None:
                geoms = body_geoms(m.body(body))
                p.changeVisualShape(gripper.body, link, rgbaColor=m.geom_rgba[geoms[0]].tolist())
                p.changeDynamics(
                    gripper.body,
                    link,
                    lateralFriction=self.friction(geoms),
                    spinningFriction=self.spin_friction,
                )
        for link in gripper.finger_joints:
            upper = float(m.joint(chain[link][0]).range[1])
            p.changeDynamics(gripper.body, link, jointLowerLimit=0.0, jointUpperLimit=upper)
        left, right = gripper.finger_joints
        axis, origin = [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]
        gear = p.createConstraint(
            gripper.body, left, gripper.body, right, pybullet.JOINT_GEAR, axis, origin, origin
        )
        p.changeConstraint(gear, gearRatio=-1.0, erp=0.2, maxForce=gear_force_n)  # equal openings
        return gripper

    def _link(self, joint: str, body: str | None, parent: int) -> dict[str, Any]:
        """createMultiBody's per-link arguments for a MuJoCo joint and the body it moves."""
        m = self.m
        collision, visual = self.shapes(body_geoms(m.body(body))) if body else (-1, -1)
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
