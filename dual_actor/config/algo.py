"""``conf/algo``: the learning algorithm, one declaration per key.

The defaults are the algorithm ``python -m dual_actor.fit`` trains (``algo=dual_actor``): residual Eq. 8 targets
with one-word copies and the warm-up's Eq. 6 weights online. ``algo=dual_actor_paper`` is Eq. 6 and Eq. 8 as
printed (``experiment=paper``); the baselines (``algo=hg_dagger|conrft_flat|dsrl``) are switches of this one
learner (docs/algorithm.md "Baselines"). :class:`LearnerConfig` is what ``DualActorModule`` reads;
:class:`AlgoConfig` adds the policy's architecture (:class:`PolicyArch`) and the fit loop's batch and budget.
"""

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional

from dual_actor.config.fields import ConfigError, check_choices, setting
from dual_actor.config.policy import PolicyArch

PHASES = ("warmup", "online")
CRITICS = ("per_task", "shared", "none")
BC_ROWS = ("all", "people", "successes")
BC_FORMS = ("consistency", "literal", "both")
REFINE_OBJECTIVES = ("talk_tweak", "dsrl", "dsrl_na")
REFINE_TARGETS = ("absolute", "residual")
Q_REDUCE = ("min", "mean")
SAMPLING = ("per_task", "pooled")


def _refines_in_warmup(algo: Mapping[str, Any]) -> bool:
    return bool(algo["refine_enabled"]) and "warmup" in algo["refine_phases"]


def _refine_setting(value: Any, algo: Mapping[str, Any]) -> Any:
    """What the warm-up sees of a refinement-actor setting: the value where the refinement actor trains in the
    warm-up, nothing otherwise (the paper trains it online only)."""
    return value if _refines_in_warmup(algo) else None


def _in_warmup(value: Any, algo: Mapping[str, Any]) -> bool:
    return "warmup" in value


@dataclass
class Lambdas:
    """Eq. 6's (lambda1 BC, lambda2 Q) per phase."""

    warmup: List[float] = setting([1.0, 0.1], "warm-up (the paper's)")
    online: List[float] = setting([1.0, 0.1], "online (the paper's: [0.5, 0.5], algo=dual_actor_paper; on this "
                                              "bench it lowered the default run on 3 of 3 seeds, docs/results.md "
                                              "'Online lambda')", warmup=False)


@dataclass
class LearnerConfig:
    """``DualActorModule``'s hyper-parameters."""

    critic_hidden: List[int] = setting([256, 256], "critic MLP widths over [obs, proprio, action] features")
    critic_feature_dim: int = setting(64, "width of each critic's proprio and action MLPs")
    critic_obs_feature_dim: int = setting(256, "width of each critic's observation encoder")
    critic_ensemble: int = setting(2, "members per critic (twin; the min is the target)")
    gamma: float = setting(0.99, "discount")
    tau: float = setting(0.005, "Polyak rate of the target critics (ConRFT)")
    actor_lr: float = setting(3.0e-4, "Adam learning rate of the primary actor")
    critic_lr: float = setting(3.0e-4, "Adam learning rate of the critics")
    refine_lr: float = setting(3.0e-4, "Adam learning rate of the refinement actor", warmup=_refine_setting)
    lambdas: Lambdas = setting(Lambdas(), "Eq. 6 weights (lambda1 BC, lambda2 Q) per phase")
    eta: List[float] = setting([1.0, 0.1, 0.1], "Eq. 11 weights (eta1 BC, eta2 Q, eta3 regulariser)",
                               warmup=_refine_setting)
    bc_form: str = setting("both", "plain head only, Eq. 5: consistency (CPQL/ConRFT) | literal (as printed) | both "
                                   "(their sum): the paper-as-printed head's reference", choices=BC_FORMS)
    calql_alpha: float = setting(5.0, "Cal-QL regulariser weight (warm-up)")
    calql_temperature: float = setting(1.0, "Cal-QL logsumexp temperature")
    calql_num_actions: int = setting(4, "Cal-QL sampled actions per state (uniform, pi(s), pi(s'))")
    task_weighting: bool = setting(True, "Eq. 15/16 task weights on the actor's Q term (false: uniform Eq. 14)")
    eps_c: float = setting(0.1, "Eq. 16's c")
    eps_min: float = setting(0.8, "Eq. 16's lower clip")
    eps_max: float = setting(1.2, "Eq. 16's upper clip")
    actor_q_reduce: str = setting("min", "how the actor losses reduce a critic's ensemble", choices=Q_REDUCE)
    grad_clip: Optional[float] = setting(10.0, "max gradient norm per optimizer, per task critic (null: off)")
    refine_enabled: bool = setting(True, "false: the single-actor ablation (ours without the dual actor)",
                                   warmup=lambda v, a: _refines_in_warmup(a))
    refine_phases: List[str] = setting(["online"], "phases the refinement actor trains in (the paper: online only)",
                                       choices=PHASES, warmup=_refine_setting)
    q_bounds: Any = setting(None, "clip TD targets to the return's range [lo, hi] (null: off); conf/algo takes the "
                                  "env's (typed Any: a ${...} link to a list cannot be merged into a typed list)")
    actor_ema: Optional[float] = setting(0.002, "EMA rate of the primary actor's weights used for acting, evaluation "
                                                "and saving (null: off, as the paper; docs/results.md)")
    distill_weight: float = setting(1.0, "anchored head: weight of the ODE-distillation term in the BC term")
    critic: str = setting("per_task", "per_task (ours) | shared (one critic, task one-hot input) | none (no critic, "
                                      "no Q term)", choices=CRITICS)
    bc_rows: str = setting("successes", "BC rows online: successes (demos, interventions, steps of successful "
                                        "episodes; docs/algorithm.md 'BC rows online') | all (Eq. 6) | people "
                                        "(demos + interventions)", choices=BC_ROWS, warmup=False)
    actor_phases: List[str] = setting(list(PHASES), "phases the primary actor trains in", choices=PHASES,
                                      warmup=_in_warmup)
    critic_phases: List[str] = setting(list(PHASES), "phases the critics train in", choices=PHASES,
                                       warmup=_in_warmup)
    refine_objective: str = setting("talk_tweak", "talk_tweak (Eq. 8-11) | dsrl (the paper's DSRL: a deterministic "
                                                  "latent-noise policy maximising the offline critics' Q) | dsrl_na "
                                                  "(published DSRL-NA: SAC in the latent noise space on a latent "
                                                  "critic distilled from the online critics; docs/algorithm.md)",
                                    choices=REFINE_OBJECTIVES, warmup=_refine_setting)
    dsrl_target_entropy: float = setting(0.0, "dsrl_na: the latent policy's target entropy (DSRL's code: 0)",
                                         warmup=_refine_setting)
    dsrl_init_alpha: float = setting(1.0, "dsrl_na: the entropy temperature's start (auto-tuned; SB3's 'auto')",
                                     warmup=_refine_setting)
    refine_subcommands: float = setting(1.0, "probability a talk-and-tweak row also trains a copy as one of its "
                                             "single-axis sub-commands (docs/algorithm.md 'Sub-command copies'; "
                                             "0: Eq. 8 as printed)", warmup=_refine_setting)
    refine_target: str = setting("residual", "Eq. 8's target: residual (the primary's action now + the recorded "
                                             "correction; docs/algorithm.md 'Residual target') | absolute (the "
                                             "executed action, Eq. 8 as printed)", choices=REFINE_TARGETS,
                                 warmup=_refine_setting)

    def __post_init__(self) -> None:
        if isinstance(self.lambdas, Mapping):
            self.lambdas = Lambdas(**self.lambdas)
        for name in ("critic_hidden", "eta", "refine_phases", "actor_phases", "critic_phases"):
            setattr(self, name, list(getattr(self, name)))
        self.lambdas.warmup, self.lambdas.online = list(self.lambdas.warmup), list(self.lambdas.online)
        check_choices(self, "algo.")
        for phase in PHASES:
            if len(getattr(self.lambdas, phase)) != 2:
                raise ConfigError(f"algo.lambdas.{phase} must be [lambda1, lambda2], got {getattr(self.lambdas, phase)}")
        if self.q_bounds is not None:
            self.q_bounds = list(self.q_bounds)
            if len(self.q_bounds) != 2 or not self.q_bounds[0] < self.q_bounds[1]:
                raise ConfigError(f"algo.q_bounds must be [lo, hi] with lo < hi, got {self.q_bounds!r}")
        if self.actor_ema is not None and not 0.0 < float(self.actor_ema) <= 1.0:
            raise ConfigError(f"algo.actor_ema must be in (0, 1] or null, got {self.actor_ema!r}")
        if not 0.0 <= float(self.refine_subcommands) <= 1.0:
            raise ConfigError(f"algo.refine_subcommands is a probability in [0, 1], got {self.refine_subcommands!r}")
        if self.task_weighting and self.critic != "per_task":
            raise ConfigError(f"algo.task_weighting (Eq. 16) weighs per-task critics' Q; algo.critic={self.critic!r} "
                              f"has none: set algo.task_weighting=false")
        if self.refine_objective in ("dsrl", "dsrl_na") and self.critic == "none":
            raise ConfigError(f"algo.refine_objective={self.refine_objective} maximises a critic's Q: it needs "
                              f"algo.critic per_task or shared")
        if float(self.dsrl_init_alpha) <= 0:
            raise ConfigError(f"algo.dsrl_init_alpha must be > 0, got {self.dsrl_init_alpha!r}")


@dataclass
class AlgoConfig(LearnerConfig, PolicyArch):
    """``conf/algo``: the learner's keys, the policy's architecture and the fit loop's batch and budget."""

    batch_size: int = setting(258, "B (divisible by 2N = 6): B/N per task in the warm-up, B/(2N) demos + B/(2N) "
                                   "rollouts per task online")
    refine_batch_size: Optional[int] = setting(None, "rows from the talk-and-tweak buffer per update (null: B); the "
                                                     "warm-up draws them too when its dataset has corrections")
    warmup_updates: int = setting(3000, "learner updates of the warm-up (phase I)")
    sampling: str = setting("per_task", "per_task: B/N rows per task (Alg. 1) | pooled: B rows uniform over all "
                                        "tasks' data (needs algo.critic != per_task)", choices=SAMPLING)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choices(self, "algo.")
        if self.sampling == "pooled" and self.critic == "per_task":
            raise ConfigError("algo.sampling=pooled mixes the tasks' rows in one slice; per-task critics need "
                              "algo.sampling=per_task (or algo.critic=shared)")
        if self.temperature < 0:
            raise ConfigError(f"algo.temperature must be >= 0, got {self.temperature}")

