"""A run's evaluations, from its config: learning-curve points, the final table, with spoken commands (the
paper's talk-and-tweak at test time) and on robot B. The protocol itself is :mod:`dual_actor.eval`."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from data_tools.atomic import atomic_write_text
from dual_actor.training.build import env_factory


def evaluate_run(cfg: DictConfig, policy, interaction, trials: int, frames: dict | None = None, speaker=None,
                 robot: int = 0, split: str | None = None) -> dict:
    """``trials`` evaluation trials per task on robot A (``robot=1``: robot B, through ``env.robot_shift``), no
    interventions (``speaker``: a simulated operator that only speaks), on ``split``'s trials (None:
    ``eval.split``, the final evaluation's; learning-curve points pass ``dev``)."""
    from dual_actor.eval import evaluate

    res = evaluate(policy, list(cfg.env.tasks), trials=trials, max_episode_steps=int(cfg.eval.max_episode_steps),
                    seed=int(cfg.eval.seed), split=str(split or cfg.eval.split),
                    online_steps=interaction.env_steps if interaction else 0,
                    intervention_rate=0.0 if interaction is None else interaction.intervention_rate(),
                    progress=bool(cfg.trainer.progress_bar), make_env=env_factory(cfg, robot), frames=frames,
                    speaker=speaker)
    return with_effort(res, interaction)


def with_effort(res: dict, interaction) -> dict:
    """``res`` with the online phase's operator effort so far (:class:`~dual_actor.data.interaction.OperatorEffort`):
    ``takeover_steps``, ``spoken_steps``, ``effort_steps`` and ``effort_per_task`` (zeros before the online phase)."""
    effort = interaction.effort.totals() if interaction is not None and hasattr(interaction, "effort") else None
    res.update({k: int(effort[k]) if effort else 0 for k in ("takeover_steps", "spoken_steps", "effort_steps")})
    res["effort_per_task"] = effort["per_task"] if effort else {}
    return res


def record_eval(cfg: DictConfig, res: dict, path: Path, title: str) -> dict:
    """An extra evaluation: its JSON file and its table under ``title``."""
    from dual_actor.eval import format_table

    atomic_write_text(path, json.dumps(res, indent=2))
    print(f"[eval] {title}:", flush=True)
    print(format_table(res, fps=float(cfg.env.fps)), flush=True)
    return res


def evaluate_with_commands(cfg: DictConfig, policy, interaction, run_dir: Path) -> dict:
    """The same trials with a simulated operator speaking refinement commands (never taking over): the paper's
    evaluation with talk-and-tweak at test time. Written as ``eval_commands.json``. The speaker uses the run's
    talk-and-tweak rule (``online.window``, ``online.sigma``) and the run's simulated expert (the schema's
    default one when the run's operator is a device)."""
    from dual_actor.config.groups import SimulatedOperatorConfig
    from dual_actor.runtime.operators import SimulatedOperator

    expert = cfg.operator.expert if "expert" in cfg.operator else SimulatedOperatorConfig.expert
    speaker = SimulatedOperator(list(cfg.env.tasks)[0], speak_commands=True, seed=int(cfg.eval.seed),
                                translation_scale_m=float(cfg.online.translation_scale_m),
                                command_window=int(cfg.online.window), sigma=float(cfg.online.sigma), expert=expert)
    res = evaluate_run(cfg, policy, interaction, int(cfg.eval.trials), speaker=speaker)
    return record_eval(cfg, res, run_dir / "eval_commands.json", "with spoken refinement commands (simulated operator)")


def evaluate_robot_b(cfg: DictConfig, policy, interaction, run_dir: Path) -> dict:
    """The same trials on robot B (``env.robot_shift``): ``eval_B.json`` (paper RQ5's transfer table)."""
    res = evaluate_run(cfg, policy, interaction, int(cfg.eval.trials), robot=1)
    return record_eval(cfg, res, run_dir / "eval_B.json", "on robot B (env.robot_shift)")


def print_authority(when: str, res: dict) -> None:
    lat = res["latent_authority"]
    cmd = res["command_authority"]
    pos = min((r["positive_fraction"] for r in cmd.values()), default=float("nan"))
    held = res.get("held_states", {})
    states = f" ({held['talk_tweak']} talk-and-tweak + {sum(held['demos'].values())} demo rows)" if held else ""
    print(f"[authority] {when}: latent x/y/z {lat['x']:.3f} / {lat['y']:.3f} / {lat['z']:.3f} action units; "
          f"single-axis commands move the commanded way on >= {pos:.0%} of held states{states}", flush=True)
