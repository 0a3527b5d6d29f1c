"""The MuJoCo backend of the language-conditioned tabletop suite."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np

from embodied_rl.envs.rendering import FastRenderer
from embodied_rl.envs.tabletop import tasks
from embodied_rl.envs.tabletop.base import DomainColors, TabletopConfig, TabletopEnvBase
from embodied_rl.envs.tabletop.scene import (
    COLORS,
    FINGER_MAX_OPENING,
    HIDDEN_GROUP,
    OBJECT_HALF_SIZE,
    SHAPES,
    SceneConfig,
    build_mjcf,
)

logger = logging.getLogger(__name__)

__all__ = ["TabletopConfig", "TabletopEnv"]

_UNSTABLE_WARNINGS = (
    mujoco.mjtWarning.mjWARN_BADQPOS,
    mujoco.mjtWarning.mjWARN_BADQVEL,
    mujoco.mjtWarning.mjWARN_BADQACC,
)


def _quat_about_axis(axis: tuple[float, float, float], angle: float) -> np.ndarray:
    half = 0.5 * angle
    return np.array([math.cos(half), *(math.sin(half) * np.asarray(axis))])


class TabletopEnv(TabletopEnvBase):
    """Language-conditioned tabletop manipulation in MuJoCo (see :class:`TabletopEnvBase`)."""

    backend = "mujoco"

    def __init__(self, task: str = "reach", **kwargs: Any) -> None:
        super().__init__(task, **kwargs)
        cfg = self.config
        self.model = mujoco.MjModel.from_xml_string(
            build_mjcf(SceneConfig(n_objects=cfg.n_objects, control_yaw=cfg.control_yaw))
        )
        self.data = mujoco.MjData(self.model)
        self._index_model()
        self._nominal = self._snapshot_nominal()
        self._const_for = (1.0, 1.0)  # (mass, size) scales the model constants were computed for
        self.control_hz = 1.0 / (cfg.n_substeps * self.model.opt.timestep)
        self._renderers: dict[bool, FastRenderer] = {}
        if cfg.obs_mode != "state":  # create now so a missing GL library fails at construction
            self._renderer(video=False)

    def _index_model(self) -> None:
        m, n = self.model, self.config.n_objects
        obj_qpos = [int(m.joint(f"obj{i}_free").qposadr[0]) for i in range(n)]
        self._obj_pose_index = np.array([list(range(a, a + 7)) for a in obj_qpos])
        self._ee_qpos = int(m.joint("ee_x").qposadr[0])
        self._ee_qvel = int(m.joint("ee_x").dofadr[0])
        if not (
            m.joint("ee_y").qposadr[0] == self._ee_qpos + 1
            and m.joint("ee_z").qposadr[0] == self._ee_qpos + 2
        ):
            raise RuntimeError(
                "scene invariant broken: ee_x, ee_y, ee_z must be consecutive joints"
            )
        self._finger_qpos = int(m.joint("finger_left").qposadr[0])
        self._finger_right_qpos = int(m.joint("finger_right").qposadr[0])
        self._yaw_qpos = int(m.joint("ee_yaw").qposadr[0]) if self.config.control_yaw else None
        self._geoms = [{shape: m.geom(f"obj{i}_{shape}").id for shape in SHAPES} for i in range(n)]
        self._bowl_body, self._plate_body = m.body("bowl").id, m.body("plate").id
        self._act_xyz = slice(m.actuator("act_x").id, m.actuator("act_z").id + 1)
        self._act_fingers = m.actuator("act_fingers").id
        self._act_yaw = m.actuator("act_yaw").id if self.config.control_yaw else None
        self._obj_bodies = np.array([m.body(f"obj{i}").id for i in range(n)])
        self._obj_geoms = np.array([gid for geoms in self._geoms for gid in geoms.values()])
        # Linear dofs only: rotational damping on a 4 cm cube would mostly stop it tipping.
        self._obj_dofs = np.array(
            [int(m.joint(f"obj{i}_free").dofadr[0]) + k for i in range(n) for k in range(3)]
        )
        # Collision bounding-volume nodes of the object bodies: they must grow with the shapes
        # or mid-phase collision misses the enlarged geoms.
        self._obj_bvh = np.concatenate(
            [
                np.arange(m.body_bvhadr[b], m.body_bvhadr[b] + m.body_bvhnum[b])
                for b in self._obj_bodies
            ]
        )
        self._friction_geoms = np.array(
            [
                *self._obj_geoms,
                m.geom("finger_left").id,
                m.geom("finger_right").id,
                m.geom("table").id,
            ]
        )
        self._table_geom = m.geom("table").id
        self._background_geoms = (m.geom("floor").id, m.geom("backdrop").id)
        self._servo_actuators = np.arange(self._act_xyz.start, self._act_xyz.stop)
        self._key_light = m.light("key").id
        self._image_cameras = np.array(
            [m.camera(c).id for c in self.config.camera if c != "wrist"], dtype=int
        )

    def _snapshot_nominal(self) -> dict[str, np.ndarray]:
        """Copies of every model field domain randomization scales or offsets."""
        m = self.model
        return {
            "body_mass": m.body_mass.copy(),
            "body_inertia": m.body_inertia.copy(),
            "geom_friction": m.geom_friction.copy(),
            "geom_solref": m.geom_solref.copy(),
            "geom_size": m.geom_size.copy(),
            "geom_rbound": m.geom_rbound.copy(),
            "geom_aabb": m.geom_aabb.copy(),
            "geom_rgba": m.geom_rgba.copy(),
            "dof_damping": m.dof_damping.copy(),
            "actuator_gainprm": m.actuator_gainprm.copy(),
            "actuator_biasprm": m.actuator_biasprm.copy(),
            "gravity": m.opt.gravity.copy(),
            "light_pos": m.light_pos.copy(),
            "light_diffuse": m.light_diffuse.copy(),
            "cam_pos": m.cam_pos.copy(),
            "cam_quat": m.cam_quat.copy(),
            "cam_fovy": m.cam_fovy.copy(),
            "bvh_aabb": m.bvh_aabb.copy(),
        }

    # ------------------------------------------------------------------ primitives
    def _sim_reset(self, layout: tasks.Layout, ee_home: np.ndarray) -> None:
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        for i, geoms in enumerate(self._geoms):
            for shape, gid in geoms.items():
                active = shape == layout.shapes[i]
                m.geom_contype[gid] = m.geom_conaffinity[gid] = int(active)
                m.geom_group[gid] = 0 if active else HIDDEN_GROUP
            adr, yaw = self._obj_pose_index[i, 0], layout.yaws[i]
            d.qpos[adr : adr + 3] = (
                *layout.positions[i],
                OBJECT_HALF_SIZE * self.domain["object_size_scale"],
            )
            d.qpos[adr + 3 : adr + 7] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
        m.body_pos[self._bowl_body, :2] = layout.bowl_xy
        m.body_pos[self._plate_body, :2] = layout.plate_xy
        d.qpos[self._ee_qpos : self._ee_qpos + 3] = ee_home
        d.qpos[self._finger_qpos] = d.qpos[self._finger_right_qpos] = FINGER_MAX_OPENING
        self._sim_set_controls(ee_home, 0.0, FINGER_MAX_OPENING)
        mujoco.mj_forward(m, d)
        mujoco.mj_step(m, d, nstep=2 * self.config.n_substeps)  # let contacts settle
        self._warnings_seen = self._count_unstable_warnings()

    def _sim_apply_domain(self, params: Mapping[str, float], colors: DomainColors) -> None:
        m, nom = self.model, self._nominal
        bodies, geoms, dofs = self._obj_bodies, self._obj_geoms, self._obj_dofs
        m.body_mass[bodies] = nom["body_mass"][bodies] * params["object_mass_scale"]
        size = params["object_size_scale"]
        # Inertia scales with mass and with size squared.
        m.body_inertia[bodies] = nom["body_inertia"][bodies] * params["object_mass_scale"] * size**2
        fg = self._friction_geoms
        m.geom_friction[fg, 0] = nom["geom_friction"][fg, 0] * params["friction_scale"]
        m.geom_solref[geoms, 1] = nom["geom_solref"][geoms, 1] * params["contact_damping_ratio"]
        m.geom_size[geoms] = nom["geom_size"][geoms] * size
        m.geom_rbound[geoms] = nom["geom_rbound"][geoms] * size
        m.geom_aabb[geoms] = nom["geom_aabb"][geoms] * size
        m.bvh_aabb[self._obj_bvh] = nom["bvh_aabb"][self._obj_bvh] * size
        m.dof_damping[dofs] = nom["dof_damping"][dofs] + params["object_damping"]
        servo = self._servo_actuators
        gain = params["actuator_gain_scale"]
        m.actuator_gainprm[servo, 0] = nom["actuator_gainprm"][servo, 0] * gain
        m.actuator_biasprm[servo, 1] = nom["actuator_biasprm"][servo, 1] * gain
        m.opt.gravity[2] = params["gravity_z"]
        physics = tuple(params[k] for k in ("object_mass_scale", "object_size_scale"))
        if physics != self._const_for:
            self._recompute_constants()
            self._const_for = physics
        # visuals
        for i, slot in enumerate(self._geoms):
            for gid in slot.values():
                m.geom_rgba[gid, :3] = np.clip(
                    np.array(COLORS[self.layout.colors[i]]) + colors.objects[i], 0, 1
                )
        background = [(gid, colors.background) for gid in self._background_geoms]
        for gid, offset in [(self._table_geom, colors.table), *background]:
            m.geom_rgba[gid, :3] = np.clip(nom["geom_rgba"][gid, :3] + offset, 0, 1)
        light = self._key_light
        m.light_pos[light] = nom["light_pos"][light] + (
            params["light_dx"],
            params["light_dy"],
            params["light_dz"],
        )
        m.light_diffuse[light] = np.clip(
            nom["light_diffuse"][light] * params["light_intensity_scale"], 0, 1
        )
        cams = self._image_cameras
        m.cam_pos[cams] = nom["cam_pos"][cams] + (
            params["camera_dx"],
            params["camera_dy"],
            params["camera_dz"],
        )
        m.cam_fovy[cams] = np.clip(nom["cam_fovy"][cams] + params["camera_fovy_deg"], 5.0, 170.0)
        pitch = _quat_about_axis((1.0, 0.0, 0.0), math.radians(params["camera_pitch_deg"]))
        yaw = _quat_about_axis((0.0, 0.0, 1.0), math.radians(params["camera_yaw_deg"]))
        for cam in cams:
            q = np.empty(4)
            mujoco.mju_mulQuat(q, nom["cam_quat"][cam], pitch)  # about the camera's own x axis
            mujoco.mju_mulQuat(q, yaw, q)  # then about the world z axis
            m.cam_quat[cam] = q
        mujoco.mj_forward(m, self.data)

    def _recompute_constants(self) -> None:
        """mj_setConst after mass or inertia changes (MuJoCo 3.3 keeps using the compiled
        values otherwise); it overwrites the state with qpos0, so the state is restored."""
        d = self.data
        saved = [
            (name, getattr(d, name).copy())
            for name in ("qpos", "qvel", "act", "ctrl", "qacc_warmstart")
        ]
        time = d.time
        mujoco.mj_setConst(self.model, d)
        for name, value in saved:
            getattr(d, name)[:] = value
        d.time = time

    def _sim_set_controls(
        self, ee_target: np.ndarray, yaw_target: float, finger_opening: float
    ) -> None:
        d = self.data
        d.ctrl[self._act_xyz] = ee_target
        if self._act_yaw is not None:
            d.ctrl[self._act_yaw] = yaw_target
        d.ctrl[self._act_fingers] = finger_opening

    def _sim_step(self) -> str | None:
        time_before, n = self.data.time, self.n_substeps_now
        mujoco.mj_step(self.model, self.data, nstep=n)
        # On divergence MuJoCo warns and calls mj_resetData, which rewinds data.time:
        # comparing clocks is a cheap test; the warning counters say which check fired.
        if self.data.time < time_before + 0.5 * n * self.model.opt.timestep:
            count = self._count_unstable_warnings()
            self._warnings_seen = count
            message = (
                "MuJoCo reported an unstable simulation (bad qpos/qvel/qacc, "
                f"{count} warnings so far) and reset its state"
            )
        elif not np.isfinite(self.data.qpos).all():
            message = "simulation state contains NaN or inf"
        else:
            return None
        logger.warning("physics became unstable: %s; truncating the episode", message)
        return message

    def _count_unstable_warnings(self) -> int:
        return sum(int(self.data.warning[w].number) for w in _UNSTABLE_WARNINGS)

    def _sim_ee(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        q, v = self.data.qpos, self.data.qvel
        yaw = float(q[self._yaw_qpos]) if self._yaw_qpos is not None else 0.0
        return (
            q[self._ee_qpos : self._ee_qpos + 3],
            v[self._ee_qvel : self._ee_qvel + 3],
            float(q[self._finger_qpos]),
            yaw,
        )

    def _sim_object_poses(self) -> np.ndarray:
        return self.data.qpos[self._obj_pose_index]  # (n_objects, 7), a copy

    def _sim_fixture_positions(self) -> tuple[np.ndarray, np.ndarray]:
        return self.data.xpos[self._bowl_body].copy(), self.data.xpos[self._plate_body].copy()

    def _renderer(self, video: bool) -> FastRenderer:
        if video not in self._renderers:
            size = self.config.render_size if video else self.config.image_size
            self._renderers[video] = FastRenderer(
                self.model, *size, self.config.render_quality, (HIDDEN_GROUP,)
            )
        return self._renderers[video]

    def _sim_render(self, camera: str, size: tuple[int, int], video: bool) -> np.ndarray:
        return self._renderer(video).render(self.data, camera)

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        super().close()
