"""Domain parameters: the physical, visual and sensor knobs domain randomization turns.

Every parameter is a scalar with a nominal value (the unrandomized simulator). ``physics``
and ``visual`` parameters are applied by the simulator backend and ``actuation`` ones by the
backend-independent env base (all through ``env.unwrapped.set_domain``); ``sensor`` ones by
the :class:`~embodied_rl.envs.randomization.DomainRandomization` wrapper, so they act the same
way on every backend.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ParameterSpec:
    """One randomizable scalar."""

    nominal: float
    group: str  # "physics" | "visual" | "actuation" | "sensor"
    unit: str
    doc: str
    integer: bool = False
    lower_limit: float = float("-inf")  # no sampled value goes below this
    upper_limit: float = float("inf")


PARAMETERS: dict[str, ParameterSpec] = {
    # physics (backend)
    "object_mass_scale": ParameterSpec(
        1.0, "physics", "x", "multiplies every object's mass", lower_limit=0.05
    ),
    "friction_scale": ParameterSpec(
        1.0,
        "physics",
        "x",
        "multiplies sliding friction of objects, fingers and table",
        lower_limit=0.01,
    ),
    "object_damping": ParameterSpec(
        0.0, "physics", "N s/m", "linear viscous damping of every object", lower_limit=0.0
    ),
    "contact_damping_ratio": ParameterSpec(
        1.0,
        "physics",
        "ratio",
        "damping ratio of contacts (restitution: lower bounces more)",
        lower_limit=0.05,
    ),
    "object_size_scale": ParameterSpec(
        1.0,
        "physics",
        "x",
        "scales every object's collision and visual size",
        lower_limit=0.5,
        upper_limit=1.5,
    ),
    "actuator_gain_scale": ParameterSpec(
        1.0, "physics", "x", "multiplies the gripper's position-servo stiffness", lower_limit=0.05
    ),
    "control_scale": ParameterSpec(
        1.0,
        "actuation",
        "x",
        "multiplies the displacement commanded per unit action",
        lower_limit=0.05,
    ),
    "gravity_z": ParameterSpec(-9.81, "physics", "m/s^2", "vertical gravity", upper_limit=0.0),
    # visuals (backend)
    "object_color_jitter": ParameterSpec(
        0.0,
        "visual",
        "rgb",
        "max per-channel offset added to each object's colour",
        lower_limit=0.0,
    ),
    "table_color_jitter": ParameterSpec(
        0.0, "visual", "rgb", "max per-channel offset of the table colour", lower_limit=0.0
    ),
    "background_color_jitter": ParameterSpec(
        0.0,
        "visual",
        "rgb",
        "max per-channel offset of the floor and backdrop colour",
        lower_limit=0.0,
    ),
    "light_dx": ParameterSpec(0.0, "visual", "m", "key light position offset along x"),
    "light_dy": ParameterSpec(0.0, "visual", "m", "key light position offset along y"),
    "light_dz": ParameterSpec(0.0, "visual", "m", "key light position offset along z"),
    "light_intensity_scale": ParameterSpec(
        1.0, "visual", "x", "multiplies the key light's diffuse intensity", lower_limit=0.0
    ),
    "camera_dx": ParameterSpec(0.0, "visual", "m", "image cameras' position offset along x"),
    "camera_dy": ParameterSpec(0.0, "visual", "m", "image cameras' position offset along y"),
    "camera_dz": ParameterSpec(0.0, "visual", "m", "image cameras' position offset along z"),
    "camera_pitch_deg": ParameterSpec(
        0.0, "visual", "deg", "image cameras' rotation about their own x axis"
    ),
    "camera_yaw_deg": ParameterSpec(
        0.0, "visual", "deg", "image cameras' rotation about the world z axis"
    ),
    "camera_fovy_deg": ParameterSpec(
        0.0, "visual", "deg", "offset of the cameras' vertical field of view"
    ),
    # sensors and actuation (wrapper)
    "obs_noise_std": ParameterSpec(
        0.0, "sensor", "obs units", "Gaussian noise on state and proprio", lower_limit=0.0
    ),
    "image_noise_std": ParameterSpec(
        0.0, "sensor", "grey levels", "Gaussian pixel noise (0-255 scale)", lower_limit=0.0
    ),
    "action_noise_std": ParameterSpec(
        0.0, "sensor", "action units", "Gaussian noise on actions", lower_limit=0.0
    ),
    "action_latency_steps": ParameterSpec(
        0.0,
        "sensor",
        "steps",
        "actions reach the robot this many steps late",
        integer=True,
        lower_limit=0.0,
    ),
    "control_jitter": ParameterSpec(
        0.0,
        "actuation",
        "fraction",
        "physics steps per control step vary by up to this fraction",
        lower_limit=0.0,
        upper_limit=0.9,
    ),
}

ENV_GROUPS = ("physics", "visual", "actuation")  # applied by env.unwrapped.set_domain


def nominal_parameters() -> dict[str, float]:
    """Every parameter at its nominal value."""
    return {name: spec.nominal for name, spec in PARAMETERS.items()}


def check_parameter_names(names) -> None:
    """Raise a ``ValueError`` naming any unknown parameter."""
    unknown = sorted(set(names) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"unknown domain parameter(s) {unknown}; known: {sorted(PARAMETERS)}")
