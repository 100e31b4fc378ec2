"""The typed config (dual_actor/config/): the default run resolves as before the schema existed, every key is
declared once with a meaning, bad values and undeclared keys are refused with one line naming the key, and the
warm-up fingerprint follows the schema's declarations."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dual_actor.config.algo import AlgoConfig, Lambdas
from dual_actor.config.fields import ConfigError, field_types, setting, warmup_view
from dual_actor.config.groups import GROUP_SCHEMAS
from dual_actor.config.policy import PolicyConfig
from dual_actor.config.sections import Config
from dual_actor.config.store import check_config, error_line

ROOT = Path(__file__).resolve().parents[1]
BEFORE = ROOT / "tests" / "data" / "default_run_config_4e99546.yaml"
# What the schema added to the default run's resolved config, with the values the code used before: the widths
# the constructors took by default (DualActorPolicy refine_proj_dim / obs_feature_dim, DualActorModule
# critic_feature_dim / critic_obs_feature_dim at 4e99546) and the simulated operator's own talk-and-tweak
# defaults (command_window 5, sigma 0.001), which the config now links to online.window / online.sigma.
ADDED = {"algo.refine_proj_dim": 128, "algo.obs_feature_dim": 256, "algo.critic_feature_dim": 64,
         "algo.critic_obs_feature_dim": 256, "operator.command_window": 5, "operator.sigma": 0.001,
         # the safety layer (issue 26): every limit off on the bench but the watchdog (the non-finite check has no key)
         "safety.workspace_min": None, "safety.workspace_max": None, "safety.max_step_m": None,
         "safety.max_step_rad": None, "safety.joint_limits": None, "safety.timeout_s": 5.0, "safety.on_exit": "hold",
         # episode control and the robot tools (issue 26): the sim's robot never waits for a person
         "online.wait_for_operator": False, "record.episodes": 20, "record.tasks": None, "record.session": None,
         "record.seed": 0, "record.policy": None, "check.reads": 20, "check.task": None,
         # held-out trials (issue 27): the final evaluation on the test split (before: one stream per task from
         # eval.seed, shared by the curve and the final evaluation)
         "eval.split": "test",
         # published DSRL (issue 27): its latent policy's target entropy and temperature start (unused by algo=dual_actor)
         "algo.dsrl_target_entropy": 0.0, "algo.dsrl_init_alpha": 1.0,
         # python -m dual_actor.train_vla (issue 28): the bench VLA's section and its output folder (unused by fit)
         "out": None, "vla.cameras": ["corner", "gripperPOV"],
         "vla.data_path": "checkpoints/data/metaworld_bench_vla_demos.hdf5", "vla.image_size": 96,
         "vla.patch_size": 16, "vla.vision_hidden": 128, "vla.vision_layers": 4, "vla.vision_heads": 4,
         "vla.text_hidden": 256, "vla.text_layers": 4, "vla.text_heads": 4, "vla.kv_heads": 2, "vla.chunk_size": 10,
         "vla.n_action_steps": 5, "vla.num_steps": 10, "vla.steps": 5000, "vla.batch_size": 32, "vla.lr": 1e-4,
         "vla.warmup_steps": 200, "vla.log_every": 100, "vla.eval_trials": 25,
         # observation layouts (issue 29: gym-hil's state | pixels): the bench reads its whole state; its metres per
         # action unit (online.translation_scale_m, before: 0.01 there, now following it)
         "env.state_dims": None, "env.obs_mode": None, "env.obs_modes": {}, "env.translation_scale_m": 0.01}


def _compose(*overrides):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_the_default_run_resolves_as_before_the_schema():
    """The resolved config of ``python -m dual_actor.fit`` is the one recorded at 4e99546 (before the typed config)
    plus exactly the keys the schema added, each with the value the code used before: no value changed."""
    before = _flat(yaml.safe_load(BEFORE.read_text()))
    now = OmegaConf.to_container(_compose(), resolve=True)
    now.pop("run_name")
    now = _flat(now)
    assert {k: now[k] for k in now if k not in before} == ADDED
    assert not [k for k in before if k not in now]
    assert {k: (before[k], now[k]) for k in before if before[k] != now[k]} == {}


def _all_schemas() -> list[type]:
    seen, todo = [], [Config, PolicyConfig] + [s for opts in GROUP_SCHEMAS.values() for s in opts.values()]
    while todo:
        s = todo.pop()
        if s in seen:
            continue
        seen.append(s)
        todo += [t for t in field_types(s).values() if dataclasses.is_dataclass(t)]
    return seen


def test_every_key_is_declared_with_a_meaning():
    from dual_actor.nets.consistency import EDMScalings

    undocumented = [f"{s.__name__}.{f.name}" for s in _all_schemas() if s is not EDMScalings
                    for f in dataclasses.fields(s) if f.name != "_target_" and not f.metadata.get("help")]
    assert undocumented == []


def test_the_configuration_page_is_the_schema():
    """``python -m dual_actor.config.reference`` (the entry point that writes the page) prints the committed page."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "dual_actor.config.reference"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == page, "docs/configuration.md is stale: python -m dual_actor.config.reference > docs/configuration.md"
    assert "| `algo.refine_target` | str | `residual` |" in page and "| `online.env_steps` | int | `15000` | no |" in page


@pytest.mark.parametrize("override, key", [("algo.actor_lr=fast", "algo.actor_lr"), ("algo.foo=1", "algo.foo"),
                                           ("online.env_steps=abc", "online.env_steps"), ("seeds=1", "seeds"),
                                           ("algo.lambdas.online=[a,b]", "algo.lambdas.online")])
def test_a_bad_override_is_one_line_naming_the_key(override, key):
    with pytest.raises(Exception) as info:
        _compose(override)
    line = error_line(info.value)
    assert line is not None and "\n" not in line and key in line, line


def test_an_unknown_option_lists_the_options():
    with pytest.raises(Exception) as info:
        _compose("operator=joystick")
    line = error_line(info.value)
    assert "operator/joystick" in line and "keyboard, none, simulated, spacemouse" in line and "\n" not in line


@pytest.mark.parametrize("overrides, match", [
    (["+algo.foo=1"], "unknown config key 'algo.foo'"),
    (["+online.windows=3"], "unknown config key 'online.windows'"),
    (["algo.critic=twin"], "algo.critic must be one of"),
    (["algo.refine_phases=[warmup,offline]"], "algo.refine_phases must be a subset"),
    (["algo.sampling=pooled"], "per-task critics need algo.sampling=per_task"),
    (["algo.critic=shared"], "algo.task_weighting"),
    (["algo.actor_ema=2.0"], "algo.actor_ema must be in"),
    (["online.label=speech"], "online.label must be one of"),
    (["operator.expert=human"], "operator.expert must be one of"),
    (["image_encoder=resnet18", "image_encoder.pooling=max"], "image_encoder.pooling must be one of"),
])
def test_check_config_refuses_what_the_schema_does_not_allow(overrides, match):
    cfg = _compose(*overrides)
    with pytest.raises(ConfigError, match=match):
        check_config(cfg)


def test_check_config_accepts_every_shipped_option():
    for group, option in [("algo", a) for a in ("dual_actor", "dual_actor_paper", "hg_dagger", "conrft_flat", "dsrl")] + \
            [("operator", o) for o in ("simulated", "keyboard", "spacemouse", "none")] + \
            [("runtime", "ray"), ("trainer", "gpu"), ("image_encoder", "resnet10"), ("experiment", "smoke"),
             ("experiment", "paper")]:
        check_config(_compose(f"{group}={option}"))
    check_config(_compose("env=hdf5", "env.tasks=[a]", "env.obs_dim=3", "env.proprio_dim=2"))


@dataclasses.dataclass
class _Inner:
    a: int = setting(1, "a")
    b: int = setting(2, "b", warmup=False)


@dataclasses.dataclass
class _Outer:
    x: int = setting(0, "x")
    skip: str = setting("s", "online only", warmup=False)
    part: list = setting([1, 2], "a pair", warmup=lambda v, s: v[0] if s["x"] else None)
    inner: _Inner = setting(_Inner(), "nested")


def test_warmup_view_follows_the_declarations():
    """Hand-checked: the online-only key goes, the function maps its value (seeing the whole section), a nested
    section is viewed the same way, an undeclared key (an open section) is kept."""
    sec = {"x": 3, "skip": "y", "part": [7, 8], "inner": {"a": 5, "b": 6}, "extra": 9}
    assert warmup_view(_Outer, sec) == {"x": 3, "part": 7, "inner": {"a": 5}, "extra": 9}
    assert warmup_view(_Outer, {**sec, "x": 0})["part"] is None


def test_the_warmup_depends_on_the_warmup_lambdas_and_not_on_the_online_ones():
    from dual_actor.training.warmup_cache import warmup_fingerprint

    base = warmup_fingerprint(_compose())
    assert base["algo"]["lambdas"] == {"warmup": [1.0, 0.1]} and "online" not in base and "operator" not in base
    assert warmup_fingerprint(_compose("algo.lambdas.online=[0.5,0.5]")) == base
    assert warmup_fingerprint(_compose("algo.lambdas.warmup=[1.0,0.0]")) != base
    assert warmup_fingerprint(_compose("algo.refine_target=absolute", "algo.eta=[1.0,0.0,0.0]")) == base
    refining = "algo.refine_phases=[warmup,online]"
    assert warmup_fingerprint(_compose(refining, "algo.refine_target=absolute")) != warmup_fingerprint(_compose(refining))


def test_the_algo_schema_defaults_are_the_default_algorithm_and_the_paper_option_differs_as_printed():
    a = AlgoConfig()
    assert (a.refine_target, a.refine_subcommands, a.lambdas) == ("residual", 1.0, Lambdas([1.0, 0.1], [1.0, 0.1]))
    paper = OmegaConf.to_object(_compose("algo=dual_actor_paper").algo)
    assert (paper.refine_target, paper.refine_subcommands, paper.lambdas.online) == ("absolute", 0.0, [0.5, 0.5])
