"""Procedural MJCF for the tabletop scene: table, gantry gripper, object slots, fixtures, cameras.

The scene is compiled once per environment. Each episode only rewrites model fields
(object colour, which shape of a slot is active, fixture positions), so resets are cheap
and the renderer is never rebuilt.

Frame: the table top is the plane z = 0, x points right and y away from the front camera.
The gripper is a Cartesian gantry (x, y, z slide joints, optional yaw hinge) with two
coupled fingers; its origin is the fingertip centre, so joint positions are the
end-effector position.
"""

from __future__ import annotations

from dataclasses import dataclass

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.15, 0.15),
    "green": (0.15, 0.7, 0.2),
    "blue": (0.15, 0.3, 0.9),
    "yellow": (0.95, 0.85, 0.1),
    "purple": (0.6, 0.2, 0.75),
    "orange": (1.0, 0.5, 0.05),
}
SHAPES: tuple[str, ...] = ("block", "cylinder")
CAMERAS: tuple[str, ...] = ("front", "top", "side", "wrist")

OBJECT_HALF_SIZE = 0.02  # m: cube half-edge, cylinder radius and half-height
OBJECT_MASS = 0.05  # kg
FINGER_MAX_OPENING = 0.04  # m per finger, from the centre line
TABLE_HALF_SIZE = (0.4, 0.35)  # m
BOWL_INNER_HALF = 0.05  # m, half inner width of the square bowl
PLATE_RADIUS = 0.05  # m
HIDDEN_GROUP = 5  # geom group of inactive object shapes, never rendered
WORKSPACE_LOW = (-0.3, -0.25, 0.0)  # m, end-effector limits
WORKSPACE_HIGH = (0.3, 0.28, 0.3)
EE_HOME = (0.0, -0.12, 0.15)


@dataclass(frozen=True)
class SceneConfig:
    """What the compiled scene contains."""

    n_objects: int = 4  # object slots; each holds one shape per episode
    control_yaw: bool = False  # add a yaw hinge to the gripper
    timestep_s: float = 0.002
    offscreen_size: int = 128  # initial offscreen buffer; grown on demand by the renderer

    def __post_init__(self) -> None:
        if not 1 <= self.n_objects <= 8:
            raise ValueError(f"n_objects={self.n_objects} must lie in [1, 8]")
        if self.timestep_s <= 0:
            raise ValueError(f"timestep_s={self.timestep_s} must be positive")


def _rgba(rgb: tuple[float, float, float], alpha: float = 1.0) -> str:
    return " ".join(f"{c:.3f}" for c in (*rgb, alpha))


def _object_slot(i: int) -> str:
    h = OBJECT_HALF_SIZE
    # Both shapes live in the slot and both are compiled as colliding, so the body's
    # collision BVH contains both; each reset switches one off (contype, conaffinity,
    # group) at run time.
    inertia = OBJECT_MASS * (2 * h) ** 2 / 6.0
    return f"""
    <body name="obj{i}" pos="{0.1 * i - 0.15:.3f} 0 {h}">
      <freejoint name="obj{i}_free"/>
      <inertial pos="0 0 0" mass="{OBJECT_MASS}" diaginertia="{inertia:.3e} {inertia:.3e} {inertia:.3e}"/>
      <geom name="obj{i}_block" class="object" type="box" size="{h} {h} {h}"/>
      <geom name="obj{i}_cylinder" class="object" type="cylinder" size="{h} {h}"
            group="{HIDDEN_GROUP}"/>
    </body>"""


def _gripper(control_yaw: bool) -> str:
    yaw_joint = (
        '<joint name="ee_yaw" type="hinge" axis="0 0 1" range="-3.1416 3.1416" damping="2"/>'
        if control_yaw
        else ""
    )
    lo, hi = WORKSPACE_LOW, WORKSPACE_HIGH
    return f"""
    <body name="gripper" pos="0 0 0" gravcomp="1">
      <joint name="ee_x" type="slide" axis="1 0 0" range="{lo[0]} {hi[0]}" damping="40"/>
      <joint name="ee_y" type="slide" axis="0 1 0" range="{lo[1]} {hi[1]}" damping="40"/>
      <joint name="ee_z" type="slide" axis="0 0 1" range="{lo[2]} {hi[2]}" damping="40"/>
      {yaw_joint}
      <site name="ee" pos="0 0 0" size="0.004" rgba="1 1 1 0"/>
      <geom name="palm" type="box" size="0.018 0.06 0.01" pos="0 0 0.062" mass="0.2"
            rgba="0.25 0.25 0.28 1"/>
      <geom name="mast" type="cylinder" size="0.012 0.12" pos="0 0 0.19" mass="0.05"
            contype="0" conaffinity="0" rgba="0.35 0.35 0.38 1"/>
      <camera name="wrist" pos="0 -0.085 0.13" xyaxes="1 0 0 0 0.749 0.663" fovy="75"/>
      <body name="finger_left" gravcomp="1">
        <joint name="finger_left" type="slide" axis="0 1 0" range="0 {FINGER_MAX_OPENING}" damping="2"/>
        <geom name="finger_left" class="finger" pos="0 0.006 0.027"/>
      </body>
      <body name="finger_right" gravcomp="1">
        <joint name="finger_right" type="slide" axis="0 -1 0" range="0 {FINGER_MAX_OPENING}" damping="2"/>
        <geom name="finger_right" class="finger" pos="0 -0.006 0.027"/>
      </body>
    </body>"""


def _fixtures() -> str:
    b, wall_h, wall_t = BOWL_INNER_HALF, 0.015, 0.006
    walls = []
    for name, pos, size in (
        ("n", (0, b + wall_t, wall_h), (b + 2 * wall_t, wall_t, wall_h)),
        ("s", (0, -b - wall_t, wall_h), (b + 2 * wall_t, wall_t, wall_h)),
        ("e", (b + wall_t, 0, wall_h), (wall_t, b, wall_h)),
        ("w", (-b - wall_t, 0, wall_h), (wall_t, b, wall_h)),
    ):
        walls.append(
            f'<geom name="bowl_wall_{name}" class="fixture" type="box" '
            f'pos="{pos[0]} {pos[1]} {pos[2]}" size="{size[0]} {size[1]} {size[2]}"/>'
        )
    return f"""
    <body name="bowl" pos="0.2 0.15 0">
      <geom name="bowl_base" class="fixture" type="box" pos="0 0 0.002" size="{b + 2 * wall_t} {b + 2 * wall_t} 0.002"/>
      {"".join(walls)}
    </body>
    <body name="plate" pos="-0.2 0.15 0">
      <geom name="plate" class="fixture" type="cylinder" pos="0 0 0.003" size="{PLATE_RADIUS} 0.003"
            rgba="0.92 0.92 0.92 1"/>
    </body>"""


def build_mjcf(config: SceneConfig) -> str:
    """Return the MJCF XML of the tabletop scene described by ``config``."""
    tx, ty = TABLE_HALF_SIZE
    slots = "".join(_object_slot(i) for i in range(config.n_objects))
    yaw_actuator = (
        '<position name="act_yaw" joint="ee_yaw" kp="20" ctrlrange="-3.1416 3.1416"/>'
        if config.control_yaw
        else ""
    )
    lo, hi = WORKSPACE_LOW, WORKSPACE_HIGH
    return f"""<mujoco model="embodied_rl_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{config.timestep_s}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{config.offscreen_size}" offheight="{config.offscreen_size}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0.1 0.1 0.1"/>
  </visual>
  <default>
    <geom solref="0.01 1" solimp="0.95 0.99 0.001"/>
    <default class="object">
      <geom condim="4" friction="1 0.02 0.001" priority="1"/>
    </default>
    <default class="finger">
      <geom type="box" size="0.012 0.006 0.025" condim="4" friction="1.5 0.02 0.001"
            mass="0.03" rgba="0.2 0.2 0.22 1"/>
    </default>
    <default class="fixture">
      <geom condim="3" friction="0.8 0.005 0.0001" rgba="0.95 0.95 0.95 1"/>
    </default>
  </default>
  <worldbody>
    <light name="key" pos="0.3 -0.5 1.2" dir="-0.2 0.4 -1" diffuse="0.6 0.6 0.6" castshadow="false"/>
    <!-- a thin box, not a plane: MuJoCo draws planes as a grid of quads, ~0.15 ms per 64x64
         frame on a CPU -->
    <geom name="floor" type="box" pos="0 0 -0.76" size="3 3 0.01" rgba="0.45 0.47 0.5 1"/>
    <geom name="backdrop" type="box" pos="0 1.6 0.5" size="3 0.01 1.6" rgba="0.62 0.68 0.74 1"
          contype="0" conaffinity="0"/>
    <geom name="table" type="box" pos="0 0 -0.025" size="{tx} {ty} 0.025" rgba="0.62 0.5 0.38 1"
          friction="0.6 0.005 0.0001"/>
    <camera name="front" pos="0 -0.5 0.42" xyaxes="1 0 0 0 0.614 0.789" fovy="45"/>
    <camera name="top" pos="0 0.02 0.95" xyaxes="1 0 0 0 1 0" fovy="45"/>
    <camera name="side" pos="0.72 0.02 0.42" xyaxes="0 1 0 -0.5 0 0.866" fovy="50"/>
    {_fixtures()}
    {slots}
    {_gripper(config.control_yaw)}
  </worldbody>
  <equality>
    <joint joint1="finger_right" joint2="finger_left" polycoef="0 1 0 0 0" solref="0.005 1"/>
  </equality>
  <actuator>
    <position name="act_x" joint="ee_x" kp="1500" ctrlrange="{lo[0]} {hi[0]}" forcerange="-40 40"/>
    <position name="act_y" joint="ee_y" kp="1500" ctrlrange="{lo[1]} {hi[1]}" forcerange="-40 40"/>
    <position name="act_z" joint="ee_z" kp="1500" ctrlrange="{lo[2]} {hi[2]}" forcerange="-40 40"/>
    {yaw_actuator}
    <position name="act_fingers" joint="finger_left" kp="400" ctrlrange="0 {FINGER_MAX_OPENING}"
              forcerange="-15 15"/>
  </actuator>
</mujoco>
"""
