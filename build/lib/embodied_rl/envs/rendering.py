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
# model.vis.quality fields per render quality. "high" is MuJoCo's default look; "fast" drops
# shadows and multisampling (~180x on a CPU) and tessellates spheres and cylinders coarsely
# (another ~2.5x with Mesa's llvmpipe at 64x64, measured in benchmarks/env_throughput.py).
_QUALITY_SETTINGS = {
    "fast": {"shadowsize": 0, "offsamples": 0, "numslices": 12, "numstacks": 4, "numquads": 1},
    "high": {"shadowsize": 4096, "offsamples": 4, "numslices": 28, "numstacks": 16, "numquads": 4},
}


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
            # Mesa's software rasteriser (llvmpipe) spreads each frame over worker threads;
            # for small frames the hand-off costs more than it saves (~1.4x slower at 64x64
            # on 2 cores) and it competes with vectorised env workers. A GPU ignores this.
            os.environ.setdefault("LP_NUM_THREADS", "0")
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
        # Read when the GL context is made, so they apply to this renderer only.
        for field, value in _QUALITY_SETTINGS[quality].items():
            setattr(model.vis.quality, field, value)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        try:
            self._renderer = mujoco.Renderer(model, height=height, width=width)
        except mujoco.FatalError as error:
            raise RuntimeError(
                f"MuJoCo could not create an OpenGL context (MUJOCO_GL="
                f"{os.environ.get('MUJOCO_GL')!r}): {error}. Without a display, set "
                "MUJOCO_GL=egl (or osmesa), or import embodied_rl before mujoco so it can "
                "choose one."
            ) from error
        _register_exit_hook()
        self._mujoco = mujoco
        self._model = model
        self._option = mujoco.MjvOption()
        for group in hidden_groups:
            self._option.geomgroup[group] = 0
        self._perturb = mujoco.MjvPerturb()
        self._cameras: dict[int | str, object] = {}
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._pixels = np.empty((height, width, 3), dtype=np.uint8)
        self.height, self.width = height, width
        _LIVE_RENDERERS.add(self)

    def _camera(self, camera: int | str):
        cam = self._cameras.get(camera)
        if cam is None:
            mujoco = self._mujoco
            camera_id = camera if isinstance(camera, int) else self._model.camera(camera).id
            if not 0 <= camera_id < self._model.ncam:
                raise ValueError(f"camera id {camera_id} is out of range [0, {self._model.ncam})")
            cam = mujoco.MjvCamera()
            cam.type, cam.fixedcamid = mujoco.mjtCamera.mjCAMERA_FIXED, camera_id
            self._cameras[camera] = cam
        return cam

    def render(self, data, camera: int | str) -> np.ndarray:
        """Return the image seen by ``camera`` as uint8 ``(H, W, 3)`` (a fresh array).

        Calls MuJoCo's renderer functions directly into a preallocated buffer:
        ``mujoco.Renderer.render`` adds about 0.25 ms per frame (flag copies, allocation,
        in-place flip), a third of a 64x64 frame on a CPU.
        """
        if self._renderer is None:
            raise RuntimeError("renderer is closed")
        mujoco, renderer = self._mujoco, self._renderer
        # Always (about 10 us): another renderer, or freeing one, may have switched contexts.
        if renderer._gl_context is not None:
            renderer._gl_context.make_current()
        mujoco.mjv_updateScene(
            self._model,
            data,
            self._option,
            self._perturb,
            self._camera(camera),
            mujoco.mjtCatBit.mjCAT_ALL,
            renderer._scene,
        )
        mujoco.mjr_render(self._rect, renderer._scene, renderer._mjr_context)
        mujoco.mjr_readPixels(self._pixels, None, self._rect, renderer._mjr_context)
        return self._pixels[::-1].copy()  # OpenGL rows run bottom-up

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
            _LIVE_RENDERERS.discard(self)

    def __enter__(self) -> FastRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
