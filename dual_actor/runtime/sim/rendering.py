"""Camera frames of the simulated robots' MuJoCo scenes (the bench's Metaworld scenes, gym-hil's Panda).

One ``mujoco.Renderer`` per env, made on the first frame (MuJoCo's GL backend from ``MUJOCO_GL``, e.g. ``egl``
with ``EGL_PLATFORM=surfaceless`` on a headless machine). Shadows and reflections are off unless
``effects=True``: with Mesa's software EGL on a 2-core CPU they cost ~6-7x (docs/benchmarks.md, docs/gym-hil.md).
Renderers still alive at exit are freed before MuJoCo's own atexit hook terminates the EGL display (a context freed
after that prints EGL_NOT_INITIALIZED tracebacks): the hook that frees them is registered when the first renderer
is made, after MuJoCo's GL import registered its own, so it runs first.
"""

from __future__ import annotations

import atexit
import weakref
from typing import Any, Mapping

import numpy as np

_LIVE: "weakref.WeakSet[SceneCameras]" = weakref.WeakSet()
_HOOKED: list[bool] = []


def _close_live() -> None:
    for cams in list(_LIVE):
        cams.close()


class SceneCameras:
    """``frames(model, data)``: ``{name: uint8 (size, size, 3)}`` RGB of every camera in ``cameras`` (our name ->
    the scene's MuJoCo camera), MuJoCo's raw output (no flips)."""

    def __init__(self, cameras: Mapping[str, str], size: int, effects: bool = False) -> None:
        self.cameras, self.size, self.effects = dict(cameras), int(size), bool(effects)
        self._renderer: Any = None

    def frames(self, model: Any, data: Any) -> dict[str, np.ndarray]:
        if not self.cameras:
            return {}
        if self._renderer is None:
            import mujoco

            self._renderer = mujoco.Renderer(model, self.size, self.size)
            if not _HOOKED:
                atexit.register(_close_live)
                _HOOKED.append(True)
            _LIVE.add(self)
            if not self.effects:
                for flag in (mujoco.mjtRndFlag.mjRND_SHADOW, mujoco.mjtRndFlag.mjRND_REFLECTION):
                    self._renderer.scene.flags[flag] = False
        out = {}
        for name, camera in self.cameras.items():
            self._renderer.update_scene(data, camera=camera)
            out[name] = self._renderer.render().copy()
        return out

    def close(self) -> None:
        """Free the GL context (a later frame makes a new one)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        _LIVE.discard(self)
