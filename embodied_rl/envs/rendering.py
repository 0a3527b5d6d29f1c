"""Headless MuJoCo rendering: backend selection, fast CPU settings, clean shutdown.

MuJoCo picks its OpenGL backend from ``MUJOCO_GL`` when ``mujoco`` is first imported,
so :func:`configure_gl` must run before that import (``embodied_rl.envs`` calls it).
On a CPU, MuJoCo's default visual quality (4096 shadow map, 4x multisampling) renders
~180x slower than with both off (see DESIGN.md), so :class:`FastRenderer` turns them
off unless ``quality="high"``.
"""

from __future__ import annotations

import atexit
import ctypes.util
import logging
import os
import weakref
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger(__name__)

RENDER_QUALITIES = ("fast", "high")


def configure_gl() -> str | None:
    """Choose a headless OpenGL backend for MuJoCo unless the user already chose one.

    Order: an explicit ``MUJOCO_GL``; ``glfw`` when a display exists; EGL (Mesa, no GPU
    needed); OSMesa. Returns the backend set, or ``None`` when none could be found.
    """
    if "MUJOCO_GL" in os.environ:
        return os.environ["MUJOCO_GL"]
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None  # MuJoCo's default (glfw) works with a display
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(library):
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
    logger.warning(
        "no headless OpenGL library found (libEGL or libOSMesa); image observations will "
        "fail. Install Debian's libegl1 and libegl-mesa0 (or libosmesa6)."
    )
    return None


_LIVE_RENDERERS: weakref.WeakSet[FastRenderer] = weakref.WeakSet()
_EXIT_HOOK_REGISTERED = False


def _close_live_renderers() -> None:
    for renderer in list(_LIVE_RENDERERS):
        renderer.close()


def _register_exit_hook() -> None:
    # MuJoCo's EGL backend registers eglTerminate with atexit when it creates its first
    # context. atexit runs hooks last-in first-out, so registering ours *after* that
    # closes every context before the display goes away (no EGLError at exit).
    global _EXIT_HOOK_REGISTERED
    if not _EXIT_HOOK_REGISTERED:
        atexit.register(_close_live_renderers)
        _EXIT_HOOK_REGISTERED = True


class FastRenderer:
    """Offscreen renderer for one model with CPU-friendly quality settings.

    Renders one or several cameras into uint8 ``(H, W, 3)`` arrays. ``hidden_groups``
    lists geom groups that are never drawn (used for inactive object shapes).
    """

    def __init__(
        self,
        model,
        height: int,
        width: int,
        quality: str = "fast",
        hidden_groups: Sequence[int] = (),
    ) -> None:
        import mujoco

        if quality not in RENDER_QUALITIES:
            raise ValueError(f"render quality={quality!r}; choose one of {RENDER_QUALITIES}")
        if height <= 0 or width <= 0:
            raise ValueError(f"image size must be positive, got height={height}, width={width}")
        if quality == "fast":
            model.vis.quality.shadowsize = 0
            model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self._mujoco = mujoco
        self._renderer = mujoco.Renderer(model, height=height, width=width)
        _register_exit_hook()
        self._option = mujoco.MjvOption()
        for group in hidden_groups:
            self._option.geomgroup[group] = 0
        self.height, self.width = height, width
        _LIVE_RENDERERS.add(self)

    def render(self, data, camera: int | str) -> np.ndarray:
        """Return the image seen by ``camera`` as uint8 ``(H, W, 3)`` (a fresh array)."""
        if self._renderer is None:
            raise RuntimeError("renderer is closed")
        self._renderer.update_scene(data, camera=camera, scene_option=self._option)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
            _LIVE_RENDERERS.discard(self)

    def __enter__(self) -> FastRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
