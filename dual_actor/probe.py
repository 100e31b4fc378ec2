"""Authority probes: how much the refinement actor can move the primary actor's action.

``python -m dual_actor.probe POLICY_DIR --data DATA.hdf5 --json out.json`` runs them on held states
of a talk-and-tweak dataset; the trainer logs the same numbers online (TensorBoard ``authority/*``).

* ``latent_authority`` per translational dimension d: the mean over held states of |G_d(s)|,

      G_d(s) = (E_z a(K e_d + K z | s) - E_z a(-K e_d + K z | s))_d / 2,

  half the action change between latent means +K e_d and -K e_d (the largest mean the refinement
  actor's default bound allows), with the same z draws for both; ``latent_authority_signed``: the mean
  of G_d(s) (its sign varies from state to state, so it can be near 0 while |G| is large).
* ``spread_ratio`` per dimension: the mean over held states of the std of a(K z | s) over z, divided
  by the std of the dataset's actions in that dimension.
* ``command_authority`` per single-axis command c (axis d_c, sign s_c, e.g. "move left": y, +): with
  the same acting noise for both, D_c(s) = s_c (a(mu(s, c) + n) - a(mu(s, "[null]") + n))_{d_c},
  n = temperature * K * z (the policy's acting noise); reported as the mean D_c, the fraction of states
  with D_c > 0, and, where the dataset has steps labelled c, the mean D_c over them divided by the mean
  correction the operator made there, s_c (action - policy_action)_{d_c}.

Only the policy is needed (no critics); everything runs under ``torch.no_grad``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from data_tools.talk_tweak import DEFAULT_WORDS, NULL_COMMAND, sentence

AXES = ("x", "y", "z")


def single_axis_commands(words=DEFAULT_WORDS) -> list[tuple[str, int, int]]:
    """(command, axis index, sign) for the six one-word commands ("move forward" -> x, +1, ...)."""
    return [(sentence([words[a][k]]), i, 1 if k == 0 else -1) for i, a in enumerate(AXES) for k in (0, 1)]


def _tile(h: torch.Tensor, proprio, n: int):
    """``n`` stacked copies of the held rows (one per noise draw): h (n B, Dh), proprio (n B, Dp) or None."""
    return h.repeat(n, 1), None if proprio is None else proprio.repeat(n, 1)


@torch.no_grad()
def latent_authority(primary, h: torch.Tensor, proprio, n_z: int = 32, dims: Sequence[int] = (0, 1, 2),
                     generator: torch.Generator | None = None) -> dict[str, list[float]]:
    """``{"abs": [mean |G_d| per d], "signed": [mean G_d per d]}`` over the rows of ``h`` (B, Dh)."""
    b, a_dim = h.shape[0], primary.action_dim
    k = primary.K
    z = torch.randn(n_z, b, a_dim, generator=generator).to(h)
    hh, pp = _tile(h, proprio, n_z)
    out_abs, out_signed = [], []
    for d in dims:
        e = torch.zeros(a_dim, dtype=h.dtype, device=h.device)
        e[d] = k
        w = (k * z).reshape(n_z * b, a_dim)
        plus = primary.action_at(w + e, hh, pp).reshape(n_z, b, a_dim).mean(0)
        minus = primary.action_at(w - e, hh, pp).reshape(n_z, b, a_dim).mean(0)
        g = (plus[:, d] - minus[:, d]) / 2
        out_abs.append(float(g.abs().mean()))
        out_signed.append(float(g.mean()))
    return {"abs": out_abs, "signed": out_signed}


@torch.no_grad()
def spread_ratio(primary, h: torch.Tensor, proprio, action_std: torch.Tensor, n_z: int = 32,
                 generator: torch.Generator | None = None) -> list[float]:
    """Per action dimension: mean over rows of std_z a(K z | s), divided by ``action_std`` (A,)."""
    b, a_dim = h.shape[0], primary.action_dim
    z = torch.randn(n_z, b, a_dim, generator=generator).to(h)
    a = primary.action_at((primary.K * z).reshape(n_z * b, a_dim), *_tile(h, proprio, n_z)).reshape(n_z, b, a_dim)
    spread = a.std(0).mean(0)
    return (spread / action_std.to(spread).clamp_min(1e-8)).tolist()


@torch.no_grad()
def command_authority(policy, h: torch.Tensor, obs, proprio, commands=None, n_z: int = 8,
                      labels: Sequence[str] | None = None, corrections: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> dict[str, dict]:
    """Per single-axis command: ``{"mean": mean D_c, "positive_fraction": P(D_c > 0), "vs_operator": ...}``.

    ``obs``: the refinement actor's observation input for the rows (``policy.encoder_input``);
    ``labels``: each row's dataset command, ``corrections``: (B, A) action - policy_action (NaN where
    none) for the ``vs_operator`` ratio (None when no row is labelled c).
    """
    primary = policy.primary
    b, a_dim = h.shape[0], primary.action_dim
    commands = commands or single_axis_commands()
    feat = policy.refinement.encode_obs(obs)
    null_ids = torch.full((b,), policy.null_command_id, dtype=torch.long, device=h.device)
    mu_null = policy.refinement.from_features(feat, null_ids)
    noise = primary.latent(torch.randn(n_z, b, a_dim, generator=generator).to(h))
    hh, pp = _tile(h, proprio, n_z)
    noise = noise.reshape(n_z * b, a_dim)
    a_null = primary.action_at(mu_null.repeat(n_z, 1) + noise, hh, pp).reshape(n_z, b, a_dim)
    out = {}
    for cmd, d, sign in commands:
        if cmd not in policy.commands:
            continue
        mu = policy.refinement.from_features(feat, policy.command_ids([cmd] * b, h.device))
        a_c = primary.action_at(mu.repeat(n_z, 1) + noise, hh, pp).reshape(n_z, b, a_dim)
        dc = sign * (a_c - a_null)[..., d]  # (n_z, B)
        per_state = dc.mean(0)
        res = {"axis": AXES[d], "sign": sign, "mean": float(per_state.mean()),
               "positive_fraction": float((per_state > 0).float().mean()), "vs_operator": None}
        if labels is not None and corrections is not None:
            rows = torch.tensor([lab == cmd for lab in labels], device=h.device)
            corr = sign * corrections[rows, d] if bool(rows.any()) else torch.empty(0)
            corr = corr[~torch.isnan(corr)] if corr.numel() else corr
            if corr.numel() and float(corr.mean()) != 0.0:
                res["vs_operator"] = float(per_state[rows].mean()) / float(corr.mean())
                res["operator_correction"] = float(corr.mean())
        out[cmd] = res
    return out


def probe_policy(policy, h, obs, proprio, actions: torch.Tensor, labels=None, corrections=None,
                 n_z: int = 32, seed: int = 0) -> dict:
    """All three probes on one set of held rows; a flat, JSON-ready dict. Runs the policy in eval mode
    (a ResNet encoder's BatchNorm must not update its statistics) and restores its mode."""
    was_training = policy.training
    policy.eval()
    try:
        return _probe_policy(policy, h, obs, proprio, actions, labels, corrections, n_z, seed)
    finally:
        policy.train(was_training)


def _probe_policy(policy, h, obs, proprio, actions, labels, corrections, n_z, seed) -> dict:
    g = torch.Generator().manual_seed(seed)
    primary = policy.primary
    lat = latent_authority(primary, h, proprio, n_z=n_z, generator=g)
    std = actions.std(0) if actions.shape[0] > 1 else torch.ones(actions.shape[1])
    spread = spread_ratio(primary, h, proprio, std, n_z=n_z, generator=g)
    cmd = command_authority(policy, h, obs, proprio, n_z=max(1, n_z // 4), labels=labels, corrections=corrections,
                            generator=g)
    return {
        "states": int(h.shape[0]), "head": primary.head, "temperature": primary.temperature,
        "latent_authority": dict(zip(AXES, lat["abs"])), "latent_authority_signed": dict(zip(AXES, lat["signed"])),
        "spread_ratio": dict(zip(AXES, spread[:3])), "command_authority": cmd,
    }


def flat_scalars(result: dict) -> dict[str, float]:
    """TensorBoard tags ``authority/...`` of a :func:`probe_policy` result."""
    out = {}
    for ax in AXES:
        out[f"authority/latent_{ax}"] = result["latent_authority"][ax]
        out[f"authority/spread_{ax}"] = result["spread_ratio"][ax]
    for cmd, r in result["command_authority"].items():
        tag = cmd.replace(" ", "_")
        out[f"authority/command_{tag}"] = r["mean"]
        out[f"authority/command_{tag}_positive"] = r["positive_fraction"]
    return out


def probe_buffers(policy, buffers, max_states: int = 256, n_z: int = 16, seed: int = 0) -> dict:
    """The probes on held rows of the learner's buffers (the trainer's ``authority/*``): talk-and-tweak
    rows first (with their labels), then demo rows of every task, ``max_states`` in all, drawn with a
    fixed seed so that successive calls see comparable states. No ``vs_operator`` (buffers keep no
    policy actions). ``held_states`` in the result says which rows were held (the CLI on a dataset holds others:
    its numbers differ for that reason)."""
    from dual_actor import constants as C

    g = torch.Generator().manual_seed(seed)
    parts = []
    tt = buffers.talk_tweak
    if len(tt):
        parts.append(tt.sample(min(len(tt), max_states // 2), g))
    held = {"source": "the run's buffers", "talk_tweak": len(parts[0][C.H]) if parts else 0, "demos": {},
            "seed": int(seed)}
    per_task = max(1, (max_states - sum(len(p[C.H]) for p in parts)) // len(buffers.tasks))
    for t in buffers.tasks:
        demos = buffers[t]["demos"]
        if len(demos):
            parts.append(demos.sample(min(len(demos), per_task), g))
            held["demos"][t] = len(parts[-1][C.H])
    keys = set.intersection(*(set(p) for p in parts))
    rows = {k: torch.cat([p[k] for p in parts]) for k in keys}
    device = policy.device
    rows = {k: v.to(device) for k, v in rows.items()}
    vocab = policy.commands
    labels = [vocab[int(i)] for i in rows[C.COMMAND]]
    res = probe_policy(policy, rows[C.H], policy.encoder_input_from_batch(rows), rows[C.PROPRIO],
                       rows[C.ACTION].float().cpu(), labels=labels, n_z=n_z, seed=seed)
    return {**res, "held_states": held}


class AuthorityLog:
    """The probes over a run: ``<run>/authority.json`` (a list of results with ``online_steps``, rewritten
    atomically after each point) and TensorBoard ``authority/*`` against online steps."""

    def __init__(self, run_dir, max_states: int = 256, n_z: int = 16, seed: int = 0):
        self.path = Path(run_dir) / "authority.json"
        self.max_states, self.n_z, self.seed = max_states, n_z, seed
        self.points: list[dict] = json.loads(self.path.read_text()) if self.path.exists() else []

    def add(self, policy, buffers, online_steps: int, experiment=None, step: int | None = None) -> dict:
        from data_tools.atomic import atomic_write_text

        res = {"online_steps": int(online_steps),
               **probe_buffers(policy, buffers, self.max_states, self.n_z, self.seed)}
        self.points.append(res)
        atomic_write_text(self.path, json.dumps(self.points, indent=2))
        if experiment is not None:
            for tag, v in flat_scalars(res).items():
                experiment.add_scalar(tag, float(v), int(online_steps if step is None else step))
        return res


# ------------------------------------------------------------------------------------ CLI
def held_rows(path: Path, policy, obs_key: str, proprio_key: str, max_states: int, seed: int,
              split: str | None = None) -> dict:
    """Up to ``max_states`` steps of ``path`` (talk-and-tweak steps first, then the rest), embedded."""
    from data_tools.hdf5_format import read_episodes

    tasks = set(policy.tasks)
    keep = []
    for ep in read_episodes(path, split=split, load_images=bool(policy.cameras)):
        if ep.task not in tasks:
            continue
        for key in (obs_key, proprio_key):
            if key not in ep.obs:
                raise ValueError(f"{path}:/data/{ep.name}/obs: no key {key!r} (has {sorted(ep.obs)}; see --obs-key)")
        keep.append(ep)
    if not keep:
        raise ValueError(f"{path}: no episode of the policy's tasks {policy.tasks}")
    rows = []
    for ep in keep:
        for t in range(len(ep.actions)):
            rows.append((ep, t, ep.refinement_command[t] != NULL_COMMAND))
    rng = np.random.default_rng(seed)
    tt = [r for r in rows if r[2]]
    rest = [r for r in rows if not r[2]]
    rng.shuffle(tt)
    rng.shuffle(rest)
    chosen = (tt + rest)[:max_states]
    state = torch.tensor(np.stack([ep.obs[obs_key][t] for ep, t, _ in chosen]), dtype=torch.float32)
    proprio = torch.tensor(np.stack([ep.obs[proprio_key][t] for ep, t, _ in chosen]), dtype=torch.float32)
    observation = state
    if policy.wants_mapping:
        images = {c: torch.from_numpy(np.stack([ep.obs[c][t] for ep, t, _ in chosen]).transpose(0, 3, 1, 2).copy())
                  for c in policy.cameras}
        observation = {"state": state, "proprio": proprio, "images": images}
    h = policy.embed(observation, [ep.task for ep, _, _ in chosen])
    all_actions = torch.tensor(np.concatenate([ep.actions for ep in keep]), dtype=torch.float32).clamp(-1, 1)
    acts = torch.tensor(np.stack([ep.actions[t] for ep, t, _ in chosen]), dtype=torch.float32).clamp(-1, 1)
    pol = torch.tensor(np.stack([ep.policy_actions[t] for ep, t, _ in chosen]), dtype=torch.float32)
    n_tt = min(len(tt), max_states)
    return {"h": h, "obs": policy.encoder_input(observation, h), "proprio": proprio, "all_actions": all_actions,
            "labels": [ep.refinement_command[t] for ep, t, _ in chosen], "corrections": acts - pol,
            "talk_tweak_states": n_tt,
            "held_states": {"source": str(path), "split": split, "talk_tweak": n_tt, "other": len(chosen) - n_tt,
                            "seed": int(seed)}}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dual_actor.probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("policy", help="a saved policy folder (save_pretrained)")
    ap.add_argument("--data", required=True, help="HDF5 talk-and-tweak dataset whose steps are the held states")
    ap.add_argument("--json", help="write the result here (refuses to overwrite without --force)")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--states", type=int, default=256, help="held states (talk-and-tweak steps first)")
    ap.add_argument("--noise-draws", type=int, default=32, help="z draws per state")
    ap.add_argument("--obs-key", default="state")
    ap.add_argument("--proprio-key", default="proprio")
    ap.add_argument("--split", default=None, help="a /mask/<split> of the dataset")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from data_tools.atomic import atomic_write_text
    from data_tools.errors import DataToolsError
    from data_tools.hdf5_format import DatasetFormatError
    from data_tools.outputs import check_output
    from dual_actor.policy import DualActorPolicy

    out = Path(args.json) if args.json else None
    try:
        if out is not None:
            check_output(out, [args.data, args.policy], force=args.force)
        if not Path(args.data).exists():
            raise FileNotFoundError(f"{args.data}: no such dataset")
        policy = DualActorPolicy.from_pretrained(args.policy)
        rows = held_rows(Path(args.data), policy, args.obs_key, args.proprio_key, args.states, args.seed, args.split)
        result = probe_policy(policy, rows["h"], rows["obs"], rows["proprio"], rows["all_actions"],
                              labels=rows["labels"], corrections=rows["corrections"], n_z=args.noise_draws,
                              seed=args.seed)
        result.update(policy=str(args.policy), data=str(args.data), talk_tweak_states=rows["talk_tweak_states"],
                      held_states=rows["held_states"])
    except (OSError, ValueError, KeyError, DatasetFormatError, DataToolsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    if out is not None:
        atomic_write_text(out, text)
    held = result["held_states"]
    print(f"held states: {held['talk_tweak']} talk-and-tweak steps + {held['other']} other steps of {held['source']} "
          f"(seed {held['seed']}); a run's authority.json holds its buffers' rows instead (its 'held_states'), so "
          f"the two differ")
    lat, spr = result["latent_authority"], result["spread_ratio"]
    print(f"latent authority x/y/z: {lat['x']:.3f} / {lat['y']:.3f} / {lat['z']:.3f} (action units); "
          f"spread ratio {spr['x']:.2f} / {spr['y']:.2f} / {spr['z']:.2f}")
    for cmd, r in result["command_authority"].items():
        vs = "" if r["vs_operator"] is None else f", {r['vs_operator']:.2f} of the operator's correction"
        print(f"  {cmd!r:18} D_c {r['mean']:+.3f}, > 0 on {r['positive_fraction']:.0%} of states{vs}")
    if out is not None:
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
