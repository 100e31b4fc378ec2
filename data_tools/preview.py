"""``preview``: draw one episode of a dataset for a person to look at (PIL rendering).

An animated GIF or a PNG contact sheet; each frame shows the camera image(s) (or, for a
dataset without images, a plot of the action trajectory with a cursor) above a text panel
(step, reward, task, actions, intervention, refinement command) and a timeline. The output is
written through :func:`data_tools.atomic.atomic_path` after the usual output check.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from data_tools.atomic import atomic_path
from data_tools.errors import CurateError, CurateWarning
from data_tools.hdf5_format import DatasetInfo, Episode, dataset_info, read_episodes
from data_tools.outputs import check_output
from data_tools.talk_tweak import NULL_COMMAND

__all__ = ["preview"]

PathLike = str | os.PathLike

_PANEL_BG = (24, 24, 24)
_TEXT = (235, 235, 235)
_DIM_TEXT = (150, 150, 150)
_RED = (220, 30, 30)
_FONT_SIZE = 14
_MIN_WIDTH = 400


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=_FONT_SIZE)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType: bitmap font
        return ImageFont.load_default()


def _load_images(path: Path, name: str, keys: Sequence[str], frames: slice) -> dict[str, np.ndarray]:
    """Only the frames ``frames`` of ``/data/<name>/obs/<key>`` (images are chunked per frame)."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        obs = f["data"][name]["obs"]
        for k in keys:
            ds = obs[k]
            # one read per frame: h5py's strided selection is ~50x slower than this
            out[k] = np.stack([ds[i] for i in range(*frames.indices(len(ds)))])
    return out


def _image_keys(path: Path, name: str) -> list[str]:
    import h5py

    with h5py.File(path, "r") as f:
        obs = f["data"][name]["obs"]
        return [k for k, ds in obs.items() if ds.dtype == np.uint8 and ds.ndim == 4]


def _fit(draw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _vector(v: np.ndarray) -> str:
    if not np.all(np.isfinite(v)):
        return "-"
    return " ".join(f"{x:+.3f}" for x in v)


class _Renderer:
    """Draws one preview frame: picture (camera tiles or plot) + a text panel + a timeline."""

    def __init__(self, ep: Episode, picture_size: tuple[int, int]):
        from PIL import Image, ImageDraw

        self.ep = ep
        self.font = _font()
        probe = ImageDraw.Draw(Image.new("RGB", (8, 8)))
        self.line_h = int(probe.textbbox((0, 0), "Ag|[", font=self.font)[3]) + 5
        pw, ph = picture_size
        widest_action = f"action  {_vector(np.full(ep.actions.shape[1], -0.5))}"
        self.width = max(pw, _MIN_WIDTH, int(probe.textlength(widest_action, font=self.font)) + 20)
        self.picture_x = (self.width - pw) // 2
        self.picture_h = ph
        self.panel_h = 5 * self.line_h + 20
        self.height = ph + self.panel_h

    def frame(self, t: int, picture):
        from PIL import Image, ImageDraw

        ep, n = self.ep, self.ep.num_samples
        img = Image.new("RGB", (self.width, self.height), _PANEL_BG)
        img.paste(picture, (self.picture_x, 0))
        d = ImageDraw.Draw(img)
        x, y, w, f = 8, self.picture_h + 6, self.width - 16, self.font
        intervened = bool(ep.intervention[t])
        status = f"{ep.name}  step {t}/{n - 1}  reward {ep.rewards[t]:g}" + ("  done" if ep.dones[t] else "")
        d.text((x, y), _fit(d, status, f, w), font=f, fill=_TEXT)
        y += self.line_h
        d.text((x, y), _fit(d, f"task    {ep.task}  ({ep.kind})", f, w), font=f, fill=_TEXT)
        y += self.line_h
        d.text((x, y), _fit(d, f"action  {_vector(ep.actions[t])}", f, w), font=f, fill=_TEXT)
        y += self.line_h
        d.text((x, y), _fit(d, f"policy  {_vector(ep.policy_actions[t])}", f, w), font=f, fill=_DIM_TEXT)
        y += self.line_h
        if intervened:
            label = "INTERVENTION"
            box = d.textbbox((x, y), label, font=f)
            d.rectangle((box[0] - 3, box[1] - 2, box[2] + 3, box[3] + 2), fill=_RED)
            d.text((x, y), label, font=f, fill=(255, 255, 255))
            cx = box[2] + 12
        else:
            d.text((x, y), "policy acting", font=f, fill=_DIM_TEXT)
            cx = x + int(d.textlength("INTERVENTION", font=f)) + 12
        command = ep.refinement_command[t]
        d.text((cx, y), _fit(d, f"command: {command}", f, self.width - cx - 8), font=f,
               fill=_TEXT if command != NULL_COMMAND else _DIM_TEXT)
        # timeline: the episode, intervened steps in red, a cursor at t
        ty, th = self.height - 8, 5
        d.rectangle((x, ty, x + w, ty + th), fill=(70, 70, 70))
        for s in np.flatnonzero(ep.intervention):
            x0 = x + int(w * s / n)
            d.rectangle((x0, ty, max(x0, x + int(w * (s + 1) / n) - 1), ty + th), fill=_RED)
        cursor = x + int(w * (t + 0.5) / n)
        d.rectangle((cursor - 1, ty - 3, cursor + 1, ty + th + 2), fill=(255, 255, 255))
        if intervened:
            d.rectangle((0, 0, self.width - 1, self.height - 1), outline=_RED, width=3)
        return img


def _camera_tiles(images: dict[str, np.ndarray]) -> tuple[list, tuple[int, int]]:
    """One picture per selected frame: the cameras side by side at a common, legible height."""
    from PIL import Image, ImageDraw

    font = _font()
    max_h = max(a.shape[1] for a in images.values())
    target_h = min(max(max_h, 192), 360)
    sizes = {k: (max(1, round(a.shape[2] * target_h / a.shape[1])), target_h) for k, a in images.items()}
    width = sum(s[0] for s in sizes.values())
    frames = []
    for i in range(len(next(iter(images.values())))):
        pic = Image.new("RGB", (width, target_h))
        x = 0
        for key, arr in images.items():
            tile = Image.fromarray(arr[i])
            resample = Image.Resampling.NEAREST if sizes[key][1] >= arr.shape[1] else Image.Resampling.BILINEAR
            pic.paste(tile.resize(sizes[key], resample), (x, 0))
            if len(images) > 1:
                d = ImageDraw.Draw(pic)
                box = d.textbbox((x + 4, 3), key, font=font)
                d.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
                d.text((x + 4, 3), key, font=font, fill=(255, 255, 255))
            x += sizes[key][0]
        frames.append(pic)
    return frames, (width, target_h)


def _trajectory_plot(ep: Episode, indices: np.ndarray) -> tuple[list, tuple[int, int]]:
    """No images in the file: the action trajectory plotted once, a cursor drawn per frame."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image, ImageDraw

    n, a = ep.actions.shape
    fig = Figure(figsize=(5.0, 2.6), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    steps = np.arange(n)
    for s in np.flatnonzero(ep.intervention):
        ax.axvspan(s - 0.5, s + 0.5, color="tab:red", alpha=0.15, linewidth=0)
    for j in range(a):
        ax.plot(steps, ep.actions[:, j], label=f"a[{j}]", linewidth=1.2)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_xlabel("step")
    ax.set_title("actions (no camera images in this dataset; red: intervention)", fontsize=8)
    ax.legend(fontsize=7, ncol=min(a, 7), loc="upper left", frameon=False)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    canvas.draw()
    background = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    height = background.height
    y0, y1 = ax.bbox.y0, ax.bbox.y1
    frames = []
    for t in indices:
        xpix = float(ax.transData.transform((t, 0.0))[0])
        pic = background.copy()
        ImageDraw.Draw(pic).line((xpix, height - y1, xpix, height - y0), fill=(0, 0, 0), width=2)
        frames.append(pic)
    return frames, background.size


def _episode_name(episode: str | int) -> str:
    text = str(episode)
    return f"demo_{text}" if text.isdigit() else text


def _check_args(path: Path, out: Path, every: int, max_frames: int, force: bool) -> None:
    if out.suffix.lower() not in (".gif", ".png"):
        raise CurateError(f"{out}: preview writes .gif (animation) or .png (contact sheet), not {out.suffix!r}")
    check_output(out, [path], force=force, error=CurateError, exists_error=CurateError)
    if int(every) != every or every < 1:
        raise CurateError(f"preview: every must be an integer >= 1, got {every}")
    if int(max_frames) != max_frames or max_frames < 1:
        raise CurateError(f"preview: max_frames must be an integer >= 1, got {max_frames}")


def _find_episode(path: Path, meta: DatasetInfo, episode: str | int) -> Episode:
    """The episode ``episode`` (``"demo_3"`` or ``3``) of ``path``, without images."""
    name = _episode_name(episode)
    if name not in meta.episode_names:
        shown = ", ".join(meta.episode_names[:5]) + (", ..." if len(meta.episode_names) > 5 else "")
        raise CurateError(f"{path}: no episode {name!r} (the file has {len(meta.episode_names)}: {shown or 'none'})")
    return next(e for e in read_episodes(path, load_images=False) if e.name == name)


def _stride(ep: Episode, every: int, max_frames: int) -> int:
    """``every``, raised (with a warning) so that at most ``max_frames`` frames are drawn."""
    n, stride = ep.num_samples, int(every)
    if math.ceil(n / stride) > max_frames:
        stride = math.ceil(n / max_frames)
        warnings.warn(f"preview: {ep.name} has {n} steps; drawing one step in {stride} to stay within "
                      f"{max_frames} frames", CurateWarning, stacklevel=3)
    return stride


def _render(path: Path, ep: Episode, camera: str | None, stride: int, progress: bool) -> tuple[list, list[str]]:
    """The frames (PIL images) of every ``stride``-th step, and the cameras drawn (a progress bar on stderr)."""
    available = _image_keys(path, ep.name)
    if camera is not None and camera not in available:
        raise CurateError(f"{path}:/data/{ep.name}/obs: no camera {camera!r} "
                          f"(image keys: {', '.join(available) or 'none'})")
    cameras = [camera] if camera is not None else available
    indices = np.arange(0, ep.num_samples, stride)
    if cameras:
        pictures, size = _camera_tiles(_load_images(path, ep.name, cameras, slice(0, ep.num_samples, stride)))
    else:
        pictures, size = _trajectory_plot(ep, indices)
    renderer = _Renderer(ep, size)
    with tqdm(total=len(indices), desc="preview", unit="frame", file=sys.stderr, disable=not progress,
              leave=False) as bar:
        frames = []
        for t, pic in zip(indices, pictures):
            frames.append(renderer.frame(int(t), pic))
            bar.update()
    return frames, cameras


def _save_gif(frames: list, dest: Path, stride: int, fps: float) -> None:
    from PIL import Image

    ms = max(20, int(round(1000.0 * stride / fps))) if fps > 0 else 100
    # fast octree palettes: PIL's default median cut takes ~0.15 s per frame
    paletted = [fr.quantize(256, method=Image.Quantize.FASTOCTREE) for fr in frames]
    paletted[0].save(dest, format="GIF", save_all=True, append_images=paletted[1:], duration=ms, loop=0)


def _save_sheet(frames: list, dest: Path, columns: int = 8, gap: int = 4) -> None:
    from PIL import Image

    cols = min(len(frames), columns)
    rows = math.ceil(len(frames) / cols)
    fw, fh = frames[0].size
    sheet = Image.new("RGB", (cols * fw + (cols - 1) * gap, rows * fh + (rows - 1) * gap), (255, 255, 255))
    for i, fr in enumerate(frames):
        sheet.paste(fr, ((i % cols) * (fw + gap), (i // cols) * (fh + gap)))
    sheet.save(dest, format="PNG", compress_level=3)


def preview(
    path: PathLike,
    episode: str | int,
    out: PathLike,
    camera: str | None = None,
    every: int = 1,
    max_frames: int = 200,
    force: bool = False,
    progress: bool = False,
) -> dict:
    """Render one episode for a person to look at: an animated GIF (``out`` ends with ``.gif``)
    or a PNG contact sheet (``.png``, frames in rows of up to 8).

    Each frame shows the camera image(s) (``camera`` = one ``obs`` image key, default all side
    by side, upscaled to a legible size) or, when the file has no images, a plot of the action
    trajectory with a cursor; under it the step, reward, task, executed action, policy action,
    a red ``INTERVENTION`` marker (and red border) on intervened steps, the refinement command,
    and a timeline with the intervened steps in red. ``episode`` is ``"demo_3"`` or ``3``.

    Every ``every``-th step is drawn; when that gives more than ``max_frames`` frames the stride
    is raised to fit (with a :class:`CurateWarning`). ``progress``: a progress bar (frames drawn) on stderr. Returns
    ``{"path", "episode", "frames", "stride", "cameras"}``. Raises :class:`CurateError` on bad
    arguments or an existing ``out`` without ``force``.
    """
    path, out = Path(path), Path(out)
    _check_args(path, out, every, max_frames, force)
    meta = dataset_info(path)
    ep = _find_episode(path, meta, episode)
    stride = _stride(ep, every, max_frames)
    frames, cameras = _render(path, ep, camera, stride, progress)
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".gif":
            _save_gif(frames, tmp, stride, meta.fps)
        else:
            _save_sheet(frames, tmp)
    return {"path": str(out), "episode": ep.name, "frames": len(frames), "stride": stride, "cameras": cameras}
