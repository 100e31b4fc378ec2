"""``python -m dual_actor.train_vla out=DIR``: train the bench VLA (lerobot's SmolVLA, reduced to fit a CPU) on the
env's demos with its cameras rendered, save it as a lerobot policy folder, and evaluate it acting alone.

A Hydra app over the same config as ``python -m dual_actor.fit`` (its ``vla`` section: ``dual_actor/config/
sections.py`` VLAConfig; ``experiment=smoke`` trains a tiny one in seconds). The demos (``vla.data_path``) are
recorded by the env's demo generator with ``vla.cameras`` rendered when the file is absent (``env.demos`` sets how
many); the folder then serves as ``backbone=smolvla backbone.checkpoint=DIR`` (docs/vla.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from dual_actor.cli import fail, run_hydra_app
from dual_actor.config.fields import ConfigError


def train_vla(cfg: DictConfig) -> Path:
    """Demos (recorded if absent) -> the bench VLA in ``out`` -> its ``eval.json``. Returns ``out``."""
    from data_tools.atomic import atomic_write_text
    from data_tools.hdf5_format import DatasetFormatError
    from dual_actor.eval import format_table
    from dual_actor.training import build
    from dual_actor.vla.bench import VLAActor, evaluate_vla, train_bench_vla

    out = Path(cfg.out if cfg.out is not None else Path(cfg.run_root) / "vla")
    if (out / "model.safetensors").exists():
        raise ConfigError(f"out={out} already holds a trained VLA (model.safetensors): give another folder")
    data_cfg = cfg.copy()
    with open_dict(data_cfg):
        data_cfg.data.path = str(cfg.vla.data_path)
        data_cfg.env.cameras = list(cfg.vla.cameras)
    try:
        data = build.ensure_dataset(data_cfg)
        print(f"[bench VLA] training on {data} (cameras {list(cfg.vla.cameras)}), {cfg.vla.steps} updates of "
              f"{cfg.vla.batch_size} ...", flush=True)
        info = train_bench_vla(cfg, out, data, progress=bool(cfg.trainer.progress_bar))
    except (DatasetFormatError, ValueError, FileExistsError) as e:
        raise ConfigError(f"training the bench VLA: {e}") from e
    last = info["log"][-1] if info["log"] else {}
    print(f"[bench VLA] {info['parameters_m']:.2f} M parameters, {info['steps']} updates in {info['seconds']:.0f} s, "
          f"final loss {last.get('loss', float('nan')):.4f}; saved to {out}", flush=True)
    if int(cfg.vla.eval_trials) > 0 and cfg.env.robot is not None:
        actor = VLAActor.load(out)  # what a user loads: the saved folder, through lerobot
        res = evaluate_vla(actor, list(cfg.env.tasks), trials=int(cfg.vla.eval_trials),
                           max_episode_steps=int(cfg.eval.max_episode_steps), seed=int(cfg.eval.seed),
                           split=str(cfg.eval.split), make_env=build.env_factory(cfg),
                           image_size=int(cfg.env.image_size or 128), progress=bool(cfg.trainer.progress_bar))
        atomic_write_text(out / "eval.json", json.dumps(res, indent=2))
        print(format_table(res).rsplit("\n", 3)[0], flush=True)
    probe = probe_vla(out, data, list(cfg.vla.cameras), info["episodes"])
    if probe is not None:
        atomic_write_text(out / "probe.json", json.dumps(probe, indent=2))
        o = probe["object"]
        print(f"[bench VLA] what h knows (linear probe, {probe['episodes']['held_out']} held-out episodes): object "
              f"position R^2 x/y/z {' / '.join(f'{v:.2f}' for v in o['h']['r2'])} (from proprio alone "
              f"{' / '.join(f'{v:.2f}' for v in o['proprio']['r2'])}), RMSE {100 * o['h']['rmse_m']:.1f} cm",
              flush=True)
        if "start" in probe:
            s = probe["start"]["object"]
            print(f"[bench VLA] ... on each episode's first {probe['start']['frames']} frames (before the hand gets "
                  f"there): R^2 {' / '.join(f'{v:.2f}' for v in s['h']['r2'])} (proprio + task "
                  f"{' / '.join(f'{v:.2f}' for v in s['proprio_task']['r2'])}), RMSE {100 * s['h']['rmse_m']:.1f} cm",
                  flush=True)
    return out


def probe_vla(out: Path, data: Path, cameras: list[str], episodes: int) -> dict | None:
    """``probe.json``: :func:`dual_actor.vla.probe.probe_dataset` of the VLA's h on its own demos (None with fewer
    than 2 episodes)."""
    from dual_actor.nets.backbones.smolvla import SmolVLABackbone
    from dual_actor.vla.probe import probe_dataset

    if episodes < 2:
        return None
    bb = SmolVLABackbone(out, camera_map={c: c for c in cameras}, device="cpu")

    def embed(obs, tasks):
        return bb.embed({"state": obs["proprio"], "images": {c: x.float() / 255.0 for c, x in obs["images"].items()}},
                        tasks)

    return probe_dataset(data, embed, cameras, every=max(2, min(5, episodes)))


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    from dual_actor.config.store import check_config

    try:
        check_config(cfg)
        train_vla(cfg)
    except ConfigError as e:
        fail(e)


def main() -> None:
    run_hydra_app(_main)


if __name__ == "__main__":
    main()
