"""Throughput of ``data_tools convert`` vs writing the same frames with lerobot 0.4.4's LeRobotDataset.

A generated session (``--episodes`` x ``--steps`` steps; cameras wrist 128x128 and head 256x256 of
uniform noise, the worst case for every compressor; 7-d action, 8-d proprio; half the steps
intervened, policy actions logged) is written with the real ``SessionWriter`` (timed too: that
is the robot runtime's per-step cost), then:

* ``convert``: logs -> HDF5 (JSON parsing + validation, PNG decoding, labelling, gzip-chunked
  HDF5 writing), end to end as the CLI runs it;
* ``filter`` (no criterion: every episode kept) and ``merge`` (of the converted dataset's two
  halves, written beforehand, untimed): the curation rewrites, which copy the image chunks as
  stored, end to end as the CLI runs them;
* LeRobotDataset (images, not video): ``create(use_videos=False) -> add_frame -> save_episode ->
  finalize`` fed with the *already decoded* frames (so its number excludes reading the log).

Frames/s counts control steps (one step = both camera images + state + action); MB/s is the size
of the input on disk (the session, or the HDF5 file(s) read) divided by the time. Every figure
gets its ratio to the LeRobotDataset writer of the same run.

    python benchmarks/convert_throughput.py                  # 10 episodes x 100 steps
    python benchmarks/convert_throughput.py --json out.json  # also save the numbers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_tools import curate  # noqa: E402
from data_tools.convert import convert  # noqa: E402
from data_tools.hdf5_format import dataset_info, read_episodes, write_dataset  # noqa: E402
from data_tools.teleop_log import SessionWriter, read_session  # noqa: E402

CAMERAS = {"wrist": (128, 128), "head": (256, 256)}
ACTION_DIM, PROPRIO_DIM = 7, 8
TASK = "pick up the bolt"


def make_session(root: Path, episodes: int, steps: int, seed: int = 0) -> float:
    """Write the benchmark session; returns the seconds spent inside ``EpisodeWriter.step``."""
    rng = np.random.default_rng(seed)
    spent = 0.0
    with SessionWriter(root, fps=10, robot="bench-arm", action_dim=ACTION_DIM, translation_scale_m=0.01,
                       cameras=tuple(CAMERAS)) as w:
        for _ in range(episodes):
            with w.episode() as ep:
                for t in range(steps):
                    images = {c: rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for c, hw in CAMERAS.items()}
                    kw = dict(
                        t=t / 10, task=TASK, obs={"proprio": rng.normal(size=PROPRIO_DIM)},
                        action=rng.uniform(-1, 1, ACTION_DIM), policy_action=rng.uniform(-1, 1, ACTION_DIM),
                        intervention=(t // 10) % 2 == 1, reward=float(t == steps - 1), done=t == steps - 1,
                        images=images,
                    )
                    t0 = time.perf_counter()
                    ep.step(**kw)
                    spent += time.perf_counter() - t0
    return spent


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def halves(dataset: Path, work: Path) -> list[Path]:
    """The dataset's first and second half of episodes as two files (the inputs of ``merge``)."""
    info = dataset_info(dataset)
    names = info.episode_names
    parts = []
    for i, keep in enumerate((set(names[: len(names) // 2]), set(names[len(names) // 2 :]))):
        eps = (e for e in read_episodes(dataset, stored_images=True) if e.name in keep)
        parts.append(write_dataset(work / f"half{i}.hdf5", eps, fps=info.fps, env_args=info.env_args, force=True))
    return parts


def timed(fn, out: Path, repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn``, each writing ``out`` anew: the previous
    output is deleted first, untimed (replacing a 250 MB file costs ext4 up to 0.1 s)."""
    runs = []
    for _ in range(repeats):
        out.unlink(missing_ok=True)
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return runs


def figure(frames: int, in_bytes: int, runs: list[float], out: Path) -> dict:
    best = min(runs)
    return {"seconds": best, "all_runs_s": runs, "frames_per_s": frames / best,
            "input_MB_per_s": in_bytes / 1e6 / best, "output_bytes": out.stat().st_size}


def bench_lerobot(session: Path, root: Path, max_episodes: int | None, threads: int) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    s = read_session(session)
    features = {
        "observation.state": {"dtype": "float32", "shape": (PROPRIO_DIM,), "names": None},
        "action": {"dtype": "float32", "shape": (ACTION_DIM,), "names": None},
    }
    for cam, (h, w) in CAMERAS.items():
        features[f"observation.images.{cam}"] = {"dtype": "image", "shape": (h, w, 3),
                                                 "names": ["height", "width", "channels"]}
    episodes = [s.read_episode(eid) for eid in s.episode_ids[:max_episodes]]  # decoded before timing
    frames = sum(len(e) for e in episodes)
    t0 = time.perf_counter()
    ds = LeRobotDataset.create("bench/convert-throughput", fps=int(s.fps), features=features, root=root,
                               robot_type="bench-arm", use_videos=False, image_writer_threads=threads)
    for ep in episodes:
        for i in range(len(ep)):
            frame = {"observation.state": ep.obs["proprio"][i], "action": ep.actions[i], "task": ep.tasks[i]}
            for cam in CAMERAS:
                frame[f"observation.images.{cam}"] = ep.images[cam][i]
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()
    seconds = time.perf_counter() - t0
    return {"frames": frames, "episodes": len(episodes), "seconds": seconds, "frames_per_s": frames / seconds,
            "output_bytes": tree_bytes(Path(root)), "image_writer_threads": threads}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--workers", type=int, default=None, help="convert's PNG decoding threads")
    ap.add_argument("--repeats", type=int, default=1, help="runs of convert, filter and merge (best is reported)")
    ap.add_argument("--lerobot-episodes", type=int, default=None, help="limit the LeRobotDataset run (slow)")
    ap.add_argument("--lerobot-threads", type=int, default=0, help="LeRobotDataset image_writer_threads")
    ap.add_argument("--skip-lerobot", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the generated data here")
    ap.add_argument("--json", type=Path, default=None, help="save the results as JSON")
    args = ap.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="convert-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    session = work / "session"
    if session.exists():
        shutil.rmtree(session)
    t0 = time.perf_counter()
    step_s = make_session(session, args.episodes, args.steps)
    gen_s = time.perf_counter() - t0
    frames = args.episodes * args.steps
    in_bytes = tree_bytes(session)
    print(f"session: {args.episodes} episodes x {args.steps} steps, {in_bytes / 1e6:.1f} MB on disk; "
          f"writer {1e3 * step_s / frames:.1f} ms/step ({frames / step_s:.0f} steps/s)")

    out = work / "out.hdf5"
    runs = timed(lambda: convert([session], out, progress=False, workers=args.workers), out, args.repeats)
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "episodes": args.episodes, "steps_per_episode": args.steps, "frames": frames,
        "cameras": {c: list(hw) for c, hw in CAMERAS.items()}, "input_bytes": in_bytes,
        "writer": {"ms_per_step": 1e3 * step_s / frames, "session_seconds": gen_s},
        "convert": figure(frames, in_bytes, runs, out),
    }
    filtered, merged, parts = work / "filtered.hdf5", work / "merged.hdf5", halves(out, work)
    result["filter"] = figure(frames, out.stat().st_size, timed(
        lambda: curate.filter_dataset(out, filtered), filtered, args.repeats), filtered)
    result["merge"] = figure(frames, sum(p.stat().st_size for p in parts), timed(
        lambda: curate.merge(parts, merged), merged, args.repeats), merged)
    labels = {"convert": "convert", "filter": "filter (all)", "merge": "merge (halves)"}
    for key, label in labels.items():
        r = result[key]
        print(f"{label + ':':15s}{r['frames_per_s']:8.0f} frames/s  {r['input_MB_per_s']:7.1f} MB/s of input  "
              f"({r['seconds']:.2f} s, output {r['output_bytes'] / 1e6:.1f} MB)")
    if not args.skip_lerobot:
        lr_root = work / "lerobot"
        if lr_root.exists():
            shutil.rmtree(lr_root)
        lr = bench_lerobot(session, lr_root, args.lerobot_episodes, args.lerobot_threads)
        lr_in = in_bytes * lr["frames"] / frames
        lr["input_MB_per_s"] = lr_in / 1e6 / lr["seconds"]
        result["lerobot"] = lr
        result["ratio_over_lerobot"] = {k: result[k]["frames_per_s"] / lr["frames_per_s"] for k in labels}
        print(f"LeRobotDataset:{lr['frames_per_s']:8.0f} frames/s  {lr['input_MB_per_s']:7.1f} MB/s of input  "
              f"({lr['seconds']:.2f} s for {lr['frames']} frames, image_writer_threads={lr['image_writer_threads']})")
        print("ratio to the LeRobotDataset writer: "
              + ", ".join(f"{label} {result['ratio_over_lerobot'][k]:.1f}x" for k, label in labels.items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"saved {args.json}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
