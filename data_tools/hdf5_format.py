"""The HDF5 talk-and-tweak dataset layout: the one module that writes and reads it.

Layout (robomimic-style, see ``docs/hdf5-format.md``)::

    attrs: format = "dual-actor-talk-tweak", format_version = 1, fps
    /data                attrs: total (steps), env_args (JSON)
    /data/demo_<k>       attrs: num_samples, task, robot, kind ("demo" | "online"), episode_id
       obs/<key>           low-dim float32 (N, d); images uint8 (N, H, W, 3), chunked + compressed
       actions             float32 (N, A)   executed (the human's where intervened)
       policy_actions      float32 (N, A)   NaN where there was none
       rewards float32 (N,)   dones bool (N,)   intervention bool (N,)
       refinement_command  variable-length UTF-8 strings (N,), "[null]" where none
    /mask/<split>        episode names (robomimic filter keys)

``dual_actor`` reads datasets only through :func:`read_episodes` / :class:`Episode`, so the
schema lives here and nowhere else. Writers go through a temporary file renamed on success:
a failure never leaves a half-written dataset behind.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import h5py
import numpy as np

from data_tools.atomic import atomic_path
from data_tools.outputs import check_output
from data_tools.talk_tweak import NULL_COMMAND

FORMAT = "dual-actor-talk-tweak"
FORMAT_VERSION = 1
EPISODE_KINDS = ("demo", "online")
_EPISODE_RE = re.compile(r"^demo_(\d+)$")
_STR_DTYPE = h5py.string_dtype(encoding="utf-8")


class DatasetFormatError(ValueError):
    """A dataset file that does not follow the layout; the message names the file and key."""


@dataclass
class Episode:
    """One episode in memory.

    Shapes: ``obs[key]``: (N, d) float32 or (N, H, W, 3) uint8 (an array, or
    :class:`StoredImages` when read for rewriting); ``actions``/``policy_actions``:
    (N, A) float32; ``rewards``: (N,) float32; ``dones``/``intervention``: (N,) bool;
    ``refinement_command``: N strings.
    """

    obs: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    task: str
    robot: str = "unknown"
    kind: str = "demo"
    episode_id: str = ""
    policy_actions: np.ndarray | None = None
    intervention: np.ndarray | None = None
    refinement_command: list[str] | None = None
    name: str = ""  # demo_<k> once read from / written to a file
    extra_attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.actions = np.asarray(self.actions, dtype=np.float32)
        n = len(self.actions)
        self.rewards = np.asarray(self.rewards, dtype=np.float32).reshape(n)
        self.dones = np.asarray(self.dones, dtype=bool).reshape(n)
        if self.policy_actions is None:
            self.policy_actions = np.full_like(self.actions, np.nan)
        self.policy_actions = np.asarray(self.policy_actions, dtype=np.float32)
        if self.intervention is None:
            self.intervention = np.zeros(n, dtype=bool)
        self.intervention = np.asarray(self.intervention, dtype=bool).reshape(n)
        if self.refinement_command is None:
            self.refinement_command = [NULL_COMMAND] * n
        self.refinement_command = [str(c) for c in self.refinement_command]

    @property
    def num_samples(self) -> int:
        return len(self.actions)

    @property
    def success(self) -> bool:
        """An episode succeeded when it earned a positive reward (sparse success reward)."""
        return bool(np.any(self.rewards > 0))

    def validate(self, where: str = "episode") -> None:
        """Raise :class:`DatasetFormatError` naming ``where`` if shapes or values are inconsistent."""
        n = self.num_samples
        if n == 0:
            raise DatasetFormatError(f"{where}: empty episode (0 steps)")
        if self.actions.ndim != 2:
            raise DatasetFormatError(f"{where}/actions: expected (N, A), got shape {self.actions.shape}")
        if self.policy_actions.shape != self.actions.shape:
            raise DatasetFormatError(
                f"{where}/policy_actions: shape {self.policy_actions.shape} != actions {self.actions.shape}"
            )
        if not np.all(np.isfinite(self.actions)):
            raise DatasetFormatError(f"{where}/actions: contains NaN or inf")
        if self.kind not in EPISODE_KINDS:
            raise DatasetFormatError(f"{where}: kind {self.kind!r} not one of {EPISODE_KINDS}")
        if not self.task:
            raise DatasetFormatError(f"{where}: empty task string")
        for name, arr in (("rewards", self.rewards), ("dones", self.dones), ("intervention", self.intervention)):
            if arr.shape != (n,):
                raise DatasetFormatError(f"{where}/{name}: expected ({n},), got {arr.shape}")
        if len(self.refinement_command) != n:
            raise DatasetFormatError(
                f"{where}/refinement_command: expected {n} strings, got {len(self.refinement_command)}"
            )
        if not self.obs:
            raise DatasetFormatError(f"{where}/obs: no observation keys")
        for key, arr in self.obs.items():
            if len(arr) != n:
                raise DatasetFormatError(f"{where}/obs/{key}: {len(arr)} rows, expected {n}")
            if arr.dtype == np.uint8:
                if arr.ndim != 4 or arr.shape[-1] != 3:
                    raise DatasetFormatError(f"{where}/obs/{key}: image must be (N, H, W, 3), got {arr.shape}")
            else:
                if arr.ndim != 2:
                    raise DatasetFormatError(f"{where}/obs/{key}: low-dim must be (N, d), got {arr.shape}")
                if not np.all(np.isfinite(arr)):
                    raise DatasetFormatError(f"{where}/obs/{key}: contains NaN or inf")


_RAW_CHUNK = 0x1  # chunk filter mask: the deflate filter (the only one) was skipped
_PROBE = 4096  # bytes from the middle of a frame compressed to tell noise from a compressible image
_DEFLATE_POOL: ThreadPoolExecutor | None = None


def _deflate_chunk(frame: np.ndarray) -> tuple[bytes | memoryview, int]:
    """One image chunk as gzip level 1 (what h5py's filter would write), or raw if it does not shrink.

    Runs in threads (zlib releases the GIL; h5py's own filter runs under the GIL, serially).
    A frame over 8 KiB whose middle 4 KiB does not shrink by 5% at level 1 (sensor noise) is
    stored raw without compressing the rest, the filter marked skipped in the chunk's filter
    mask, which every HDF5 reader honours; smaller frames are compressed whole. The probe costs
    0.03 ms (a whole 128x128 noise frame: 0.7 ms); on photos and renders a 4 KiB probe
    overstates the frame's ratio by up to 0.1 (0.86 for 0.75), far from the 0.95 cut.
    """
    raw = memoryview(np.ascontiguousarray(frame)).cast("B")
    if len(raw) > 2 * _PROBE:
        mid = len(raw) // 2
        if len(zlib.compress(raw[mid : mid + _PROBE], 1)) > 0.95 * _PROBE:
            return raw, _RAW_CHUNK
    packed = zlib.compress(raw, 1)
    return (packed, 0) if len(packed) < len(raw) else (raw, _RAW_CHUNK)


def _write_images(obs_g: h5py.Group, key: str, arr: np.ndarray) -> None:
    """uint8 (N, H, W, 3), one chunk per frame, gzip-compatible, compressed in parallel."""
    global _DEFLATE_POOL
    if _DEFLATE_POOL is None:
        _DEFLATE_POOL = ThreadPoolExecutor(min(8, os.cpu_count() or 1), thread_name_prefix="hdf5-deflate")
    ds = obs_g.create_dataset(
        key, shape=arr.shape, dtype=np.uint8, chunks=(1, *arr.shape[1:]), compression="gzip", compression_opts=1
    )
    origin = (0,) * (arr.ndim - 1)
    for i, (data, mask) in enumerate(_DEFLATE_POOL.map(_deflate_chunk, arr)):
        ds.id.write_direct_chunk((i, *origin), data, mask)


def _frame_chunked(ds: h5py.Dataset) -> bool:
    """Images laid out as :func:`_write_images` writes them: uint8 (N, H, W, 3), one chunk per
    frame, every chunk stored, deflate the only filter."""
    if ds.dtype != np.uint8 or ds.ndim != 4 or ds.shape[-1] != 3 or ds.chunks != (1, *ds.shape[1:]):
        return False
    dcpl = ds.id.get_create_plist()
    return (dcpl.get_nfilters() == 1 and dcpl.get_filter(0)[0] == h5py.h5z.FILTER_DEFLATE
            and ds.id.get_num_chunks() == ds.shape[0])


@dataclass(frozen=True)
class StoredImages:
    """Images left in the file being read: what ``read_episodes(..., stored_images=True)`` gives
    for an image key laid out as this module writes it (one gzip chunk per frame).

    :func:`write_dataset` / :func:`append_episodes` copy its chunks as stored (same chunk shape,
    filter and bytes) instead of decompressing and recompressing every frame. ``shape`` /
    ``dtype`` / ``ndim`` / ``len`` are those of the uint8 (N, H, W, 3) array; ``np.asarray``
    reads the pixels. Usable while the file is open: until the generator that yielded it
    moves on to the next episode.
    """

    dataset: h5py.Dataset
    where: str  # "<file>:/data/demo_<k>/obs/<key>", for errors

    shape = property(lambda self: self.dataset.shape)
    dtype = property(lambda self: self.dataset.dtype)
    ndim = property(lambda self: self.dataset.ndim)

    def __len__(self) -> int:
        return self.dataset.shape[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.dataset[()] if dtype is None else self.dataset[()].astype(dtype)

    def stored_chunks(self) -> Iterator[tuple[int, bytes]]:
        """(filter mask, stored bytes) of every frame, each checked to hold exactly one frame:
        a raw chunk by its size, a deflated one by inflating it (zlib; far cheaper than
        deflating), so a damaged source fails here as a decoding read would."""
        frame_bytes = int(np.prod(self.shape[1:]))
        origin = (0,) * (self.ndim - 1)
        for i in range(len(self)):
            mask, data = self.dataset.id.read_direct_chunk((i, *origin))
            try:
                size = len(data) if mask & _RAW_CHUNK else len(zlib.decompress(data))
            except zlib.error as e:
                raise DatasetFormatError(f"{self.where}: frame {i}: stored chunk does not inflate ({e})") from None
            if size != frame_bytes:
                raise DatasetFormatError(
                    f"{self.where}: frame {i}: stored chunk holds {size} bytes, expected {frame_bytes}"
                )
            yield mask, data


def _copy_images(obs_g: h5py.Group, key: str, src: StoredImages) -> None:
    """The source's chunks written as they are stored: same chunk shape, gzip level and bytes."""
    ds = obs_g.create_dataset(key, shape=src.shape, dtype=np.uint8, chunks=src.dataset.chunks,
                              compression="gzip", compression_opts=src.dataset.compression_opts)
    origin = (0,) * (src.ndim - 1)
    for i, (mask, data) in enumerate(src.stored_chunks()):
        ds.id.write_direct_chunk((i, *origin), data, mask)


def _write_episode(group: h5py.Group, ep: Episode) -> None:
    obs_g = group.create_group("obs")
    for key, arr in ep.obs.items():
        if isinstance(arr, StoredImages):
            _copy_images(obs_g, key, arr)
        elif arr.dtype == np.uint8:
            _write_images(obs_g, key, np.ascontiguousarray(arr))
        else:
            obs_g.create_dataset(key, data=np.asarray(arr, dtype=np.float32))
    group.create_dataset("actions", data=ep.actions)
    group.create_dataset("policy_actions", data=ep.policy_actions)
    group.create_dataset("rewards", data=ep.rewards)
    group.create_dataset("dones", data=ep.dones)
    group.create_dataset("intervention", data=ep.intervention)
    group.create_dataset("refinement_command", data=ep.refinement_command, dtype=_STR_DTYPE)
    group.attrs["num_samples"] = ep.num_samples
    group.attrs["task"] = ep.task
    group.attrs["robot"] = ep.robot
    group.attrs["kind"] = ep.kind
    group.attrs["episode_id"] = ep.episode_id or group.name.rsplit("/", 1)[-1]
    for k, v in ep.extra_attrs.items():
        group.attrs[k] = v


def write_dataset(
    path: str | os.PathLike,
    episodes: Iterable[Episode],
    fps: float,
    env_args: Mapping | None = None,
    masks: Mapping[str, Sequence[str]] | None = None,
    force: bool = False,
) -> Path:
    """Write ``episodes`` as a new dataset at ``path`` (temporary file, renamed on success).

    Refuses to replace an existing file unless ``force``
    (:class:`~data_tools.errors.OutputExistsError`, a ``FileExistsError``). Episodes are named
    ``demo_0..`` in order. Returns the path written.
    """
    path = check_output(path, force=force)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["fps"] = float(fps)
        data = f.create_group("data")
        total = 0
        for k, ep in enumerate(episodes):
            where = f"{path}:/data/demo_{k}"
            ep.validate(where)
            _write_episode(data.create_group(f"demo_{k}"), ep)
            ep.name = f"demo_{k}"
            total += ep.num_samples
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(dict(env_args or {}))
        mask_g = f.create_group("mask")
        for split, names in (masks or {}).items():
            mask_g.create_dataset(split, data=list(names), dtype=_STR_DTYPE)
    return path


@dataclass
class DatasetInfo:
    path: Path
    fps: float
    env_args: dict
    episode_names: list[str]
    masks: dict[str, list[str]]


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise DatasetFormatError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DatasetFormatError(f"{path}: not a readable HDF5 file ({e})") from None


def _check_header(f: h5py.File, path: Path) -> None:
    fmt = f.attrs.get("format")
    if fmt != FORMAT:
        raise DatasetFormatError(f"{path}: attribute 'format' is {fmt!r}, expected {FORMAT!r}")
    ver = f.attrs.get("format_version")
    ver = None if ver is None else ver.item() if hasattr(ver, "item") else ver
    if ver != FORMAT_VERSION:
        raise DatasetFormatError(f"{path}: format_version {ver!r} not supported (expected {FORMAT_VERSION})")
    if "data" not in f:
        raise DatasetFormatError(f"{path}: missing group /data")


def _sorted_names(group: h5py.Group, path: Path) -> list[str]:
    names = []
    for name in group.keys():
        m = _EPISODE_RE.match(name)
        if not m:
            raise DatasetFormatError(f"{path}:/data/{name}: unexpected entry (episodes are named demo_<k>)")
        names.append((int(m.group(1)), name))
    return [n for _, n in sorted(names)]


def dataset_info(path: str | os.PathLike) -> DatasetInfo:
    """Header, episode names and masks of a dataset, without loading arrays."""
    path = Path(path)
    with _open(path) as f:
        _check_header(f, path)
        names = _sorted_names(f["data"], path)
        try:
            env_args = json.loads(f["data"].attrs.get("env_args", "{}"))
        except json.JSONDecodeError as e:
            raise DatasetFormatError(f"{path}:/data attrs env_args: not JSON ({e})") from None
        masks = {}
        if "mask" in f:
            for split, ds in f["mask"].items():
                masks[split] = [s.decode() if isinstance(s, bytes) else str(s) for s in ds[()]]
        return DatasetInfo(path, float(f.attrs.get("fps", 10.0)), env_args, names, masks)


def feature_widths(path: str | os.PathLike, obs_keys: Iterable[str]) -> dict[str, int]:
    """The widths of ``obs/<key>`` for ``obs_keys`` and of ``actions`` (key ``"actions"``), read from the first
    episode's dataset shapes (no arrays loaded): ``{key: width}``."""
    path = Path(path)
    with _open(path) as f:
        _check_header(f, path)
        names = _sorted_names(f["data"], path)
        if not names:
            raise DatasetFormatError(f"{path}: no episodes")
        g = f["data"][names[0]]
        out = {}
        for key in [*obs_keys, "actions"]:
            where = f"{path}:/data/{names[0]}/" + (key if key == "actions" else f"obs/{key}")
            ds = g.get(key) if key == "actions" else g.get("obs", {}).get(key)
            if ds is None:
                raise DatasetFormatError(f"{where}: missing")
            if len(ds.shape) != 2:
                raise DatasetFormatError(f"{where}: shape {ds.shape}, expected (N, d)")
            out[key] = int(ds.shape[1])
        return out


def _read_episode(g: h5py.Group, where: str, load_images: bool, stored_images: bool) -> Episode:
    def need(key: str) -> np.ndarray:
        if key not in g:
            raise DatasetFormatError(f"{where}: missing dataset '{key}'")
        return g[key][()]

    for attr in ("task", "num_samples"):
        if attr not in g.attrs:
            raise DatasetFormatError(f"{where}: missing attribute '{attr}'")
    if "obs" not in g or not isinstance(g["obs"], h5py.Group):
        raise DatasetFormatError(f"{where}: missing group 'obs'")
    obs = {}
    for key, ds in g["obs"].items():
        if ds.dtype == np.uint8 and not load_images:
            continue
        obs[key] = StoredImages(ds, f"{where}/obs/{key}") if stored_images and _frame_chunked(ds) else ds[()]
    commands = [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in need("refinement_command")]
    ep = Episode(
        obs=obs,
        actions=need("actions"),
        rewards=need("rewards"),
        dones=need("dones"),
        task=str(g.attrs["task"]),
        robot=str(g.attrs.get("robot", "unknown")),
        kind=str(g.attrs.get("kind", "demo")),
        episode_id=str(g.attrs.get("episode_id", "")),
        policy_actions=need("policy_actions"),
        intervention=need("intervention"),
        refinement_command=commands,
        name=g.name.rsplit("/", 1)[-1],
    )
    if int(g.attrs["num_samples"]) != ep.num_samples:
        raise DatasetFormatError(
            f"{where}: attribute num_samples={int(g.attrs['num_samples'])} but actions has {ep.num_samples} rows"
        )
    if obs:
        ep.validate(where)
    return ep


def read_episodes(
    path: str | os.PathLike, split: str | None = None, load_images: bool = True, stored_images: bool = False
) -> Iterator[Episode]:
    """Stream the episodes of a dataset (all, or those of ``/mask/<split>``), validated.

    ``stored_images`` (rewriting a dataset): image keys stored one gzip chunk per frame come as
    :class:`StoredImages` (not decoded; the writers copy their chunks), others as arrays.
    Raises :class:`DatasetFormatError` naming the file and key on any deviation from the layout.
    """
    path = Path(path)
    with _open(path) as f:
        _check_header(f, path)
        names = _sorted_names(f["data"], path)
        if split is not None:
            if "mask" not in f or split not in f["mask"]:
                raise DatasetFormatError(f"{path}: no split '/mask/{split}'")
            wanted = {s.decode() if isinstance(s, bytes) else str(s) for s in f["mask"][split][()]}
            names = [n for n in names if n in wanted]
        for name in names:
            yield _read_episode(f["data"][name], f"{path}:/data/{name}", load_images, stored_images)



def _layout_of(item: h5py.Group | Episode) -> tuple:
    """(action width, {obs key: (trailing shape, is image)}) of a stored or in-memory episode."""
    if isinstance(item, Episode):
        obs = {k: (tuple(np.shape(v)[1:]), np.asarray(v).dtype == np.uint8) for k, v in item.obs.items()}
        return tuple(item.actions.shape[1:]), obs
    obs = {k: (tuple(ds.shape[1:]), ds.dtype == np.uint8) for k, ds in item["obs"].items()}
    return tuple(item["actions"].shape[1:]), obs


def _check_same_layout(ref: tuple, ref_where: str, ep: Episode, where: str) -> None:
    (a_ref, obs_ref), (a_new, obs_new) = ref, _layout_of(ep)
    if a_new != a_ref:
        raise DatasetFormatError(f"{where}/actions: width {a_new} != {a_ref} of {ref_where}")
    if set(obs_new) != set(obs_ref):
        raise DatasetFormatError(f"{where}/obs: keys {sorted(obs_new)} != {sorted(obs_ref)} of {ref_where}")
    for k, (shape, is_img) in obs_new.items():
        if obs_ref[k] != (shape, is_img):
            kind = lambda img: "image" if img else "low-dim"  # noqa: E731
            raise DatasetFormatError(
                f"{where}/obs/{k}: {kind(is_img)} {shape} != {kind(obs_ref[k][1])} {obs_ref[k][0]} of {ref_where}"
            )


def append_episodes(path: str | os.PathLike, episodes: Iterable[Episode]) -> list[str]:
    """Add ``episodes`` to an existing dataset in place, after its last ``demo_<k>``.

    Nothing already in the file is rewritten; ``/data`` attribute ``total`` is updated.
    Episodes must match the layout of those already stored (action width, obs keys, shapes).
    A list / tuple is validated entirely (values and layout) before the file is opened for
    writing; other iterables (streams of large episodes) are validated one by one before each
    is written. On any exception the groups added so far are deleted and ``total`` is left as
    it was (the logical content is as before; HDF5 may keep the freed space). Returns the new
    episode names. Raises :class:`DatasetFormatError` (naming file and key).
    """
    path = Path(path)
    with _open(path) as f:  # header / naming / layout checks before touching anything
        _check_header(f, path)
        names = _sorted_names(f["data"], path)
        ref = (_layout_of(f["data"][names[0]]), f"{path}:/data/{names[0]}") if names else None
    next_k = int(_EPISODE_RE.match(names[-1]).group(1)) + 1 if names else 0
    if isinstance(episodes, (list, tuple)):
        for i, ep in enumerate(episodes):
            where = f"{path}:/data/demo_{next_k + i}"
            ep.validate(where)
            if ref is None:
                ref = (_layout_of(ep), where)
            _check_same_layout(*ref, ep, where)
    added: list[str] = []
    try:
        f = h5py.File(path, "r+")
    except OSError as e:
        raise DatasetFormatError(f"{path}: cannot be opened for writing ({e})") from None
    with f:
        data = f["data"]
        total = int(data.attrs.get("total", 0))
        try:
            for ep in episodes:
                name = f"demo_{next_k + len(added)}"
                where = f"{path}:/data/{name}"
                ep.validate(where)
                if ref is None:
                    ref = (_layout_of(ep), where)
                _check_same_layout(*ref, ep, where)
                added.append(name)
                _write_episode(data.create_group(name), ep)
                ep.name = name
                total += ep.num_samples
            data.attrs["total"] = total
            f.flush()
        except BaseException:
            for name in added:
                if name in data:
                    del data[name]
            f.flush()
            raise
    return added
