"""Run folder names of a Hydra multirun: ``<arm>-s<seed>``, what notebooks/03_results.ipynb reads.

``python -m dual_actor.fit -m seed=0,1,2 algo=dual_actor,dsrl,dsrl_na,hg_dagger,conrft_flat`` (without ``run_name``) gives
each job ``<run_root>/<arm>-s<seed>``: the arm is the algo option (``dual_actor`` is ``dual``, or ``single`` with
``algo.refine_enabled=false``), and any other swept key is appended (``dual-s0_algo.tau=0.01``). A folder that
exists is refused as in a single run (no job overwrites another's results). Hydra's own ``multirun.yaml`` goes to
``<run_root>/multirun/<time>/`` (conf/config.yaml ``hydra.sweep``), never into the working directory.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

ARM_OF_ALGO = {"dual_actor": "dual"}
IN_ARM = ("seed", "algo", "algo.refine_enabled")  # keys the arm and seed already say


def arm_name(cfg: DictConfig, algo_choice: str) -> str:
    """The arm a run belongs to: its algo option, ``dual`` / ``single`` for ours with / without the dual actor."""
    if algo_choice == "dual_actor" and not cfg.algo.refine_enabled:
        return "single"
    return ARM_OF_ALGO.get(algo_choice, algo_choice)


def multirun_job_name(cfg: DictConfig, argv: list[str] | None = None) -> None:
    """In a Hydra multirun without an explicit ``run_name``, this job's run name ``<arm>-s<seed>[_<other swept
    key=value>,...]``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.types import RunMode

    hc = HydraConfig.get()
    job = list(hc.overrides.task)
    if hc.mode != RunMode.MULTIRUN or any(o.split("=", 1)[0].lstrip("+~") == "run_name" for o in job):
        return
    given = [a for a in (sys.argv[1:] if argv is None else argv) if "=" in a and not a.startswith("-")]
    swept = {o.key_or_group for o in OverridesParser.create().parse_overrides(given) if o.is_sweep_override()}
    others = [o for o in job if (k := o.split("=", 1)[0].lstrip("+~")) in swept and k not in IN_ARM]
    name = f"{arm_name(cfg, hc.runtime.choices['algo'])}-s{int(cfg.seed)}"
    cfg.run_name = name + (f"_{','.join(others).replace('/', '_')}" if others else "")
