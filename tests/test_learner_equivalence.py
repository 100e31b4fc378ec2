"""The faster learner (issue 11: stacked task critics, Cal-QL's deterministic samples evaluated once, the
refinement update's mu-independent terms computed once) gives the losses of the implementation before it,
kept verbatim in tests/reference_learner.py: the same weights, batch and random draws, several updates in
each phase, every logged loss / Q / norm within 1e-5 (fp32)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

import reference_learner as ref
from dual_actor.module import DualActorModule
from factories import tiny_module_kwargs, training_batch
from test_module import Repeat

UPDATES = 4

class Record(L.Callback):
    def __init__(self):
        self.logs = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.logs.append(dict(pl_module.last_logs))


def stacked_critics_state(old_critics) -> dict[str, torch.Tensor]:
    """The reference's per-task ``TaskCritic`` list as a ``TaskCritics`` state dict. Both register their
    parameters in the same order (obs encoder, proprio MLP, action MLP, state_in, action_in, first
    LayerNorm, head); a stacked tensor is the tasks' tensors stacked task-major, except the state encoder's
    ``nn.Linear`` weight, which is stored transposed (in, out) as an ensemble layer's."""
    per_task = [list(c.named_parameters()) for c in old_critics]
    names = [n for n, _ in per_task[0]]
    return {n: torch.stack([dict(pt)[n].detach() for pt in per_task]) for n in names}, names


def load_reference_weights(new: DualActorModule, old: ref.DualActorModule) -> None:
    new.policy.load_state_dict(old.policy.state_dict())
    if old.primary_ema is not None:
        new.primary_ema.load_state_dict(old.primary_ema.state_dict())
    for dst, src in ((new.critics, old.critics), (new.target_critics, old.target_critics)):
        stacked, old_names = stacked_critics_state(src)
        new_params = list(dst.named_parameters())
        assert len(new_params) == len(old_names)
        with torch.no_grad():
            for (new_name, p), old_name in zip(new_params, old_names):
                x = stacked[old_name]
                if old_name == "obs_encoder.net.0.weight":  # nn.Linear (out, in) -> ensemble (in, out)
                    x = x.transpose(1, 2)
                assert x.numel() == p.numel(), (new_name, old_name)
                p.copy_(x.reshape(p.shape))


def run(module, batch, phase: str, seed: int) -> list[dict]:
    module.set_phase(phase)
    rec = Record()
    trainer = L.Trainer(max_epochs=1, max_steps=-1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec])
    module.hparams.max_updates = module.num_updates + UPDATES
    torch.manual_seed(seed)
    trainer.fit(module, DataLoader(Repeat(batch), batch_size=None))
    return rec.logs


@pytest.mark.parametrize("variant", [
    {},  # the default: anchored head, temperature 0 (deterministic primary mode)
    {"policy_over": {"primary_head": "plain"}},  # a stochastic head: Cal-QL draws n samples per state
    {"policy_over": {"temperature": 0.5}},  # anchored, stochastic: the refinement update's offset path with noise
    {"grad_clip": None, "actor_q_reduce": "mean", "q_bounds": (0.0, 1.0)},
], ids=["anchored", "plain", "anchored-t0.5", "no-clip-mean-qbounds"])
def test_losses_equal_the_reference_implementation(variant):
    variant = dict(variant)
    policy_over = variant.pop("policy_over", {})
    # the reference predates the BC-rows, residual-target and sub-command switches: Eq. 6 on every row, Eq. 8 as
    # printed, and the paper's online lambdas (its default), given to both
    kw = tiny_module_kwargs(log_every=1, refine_phases=("warmup", "online"),
                            lambdas={"warmup": (1.0, 0.1), "online": (0.5, 0.5)}, **variant)
    kw["policy"] = {**kw["policy"], **policy_over}
    torch.manual_seed(0)
    old = ref.DualActorModule(policy=kw["policy"], log_every=kw["log_every"], **kw["learner"])
    new = DualActorModule(**{**kw, "learner": {**kw["learner"], "bc_rows": "all", "refine_subcommands": 0.0,
                                               "refine_target": "absolute"}})
    load_reference_weights(new, old)
    batch = training_batch(per_task=8, seed=3)
    compared = 0
    for phase, seed in (("warmup", 11), ("online", 12)):
        got, want = run(new, batch, phase, seed), run(old, batch, phase, seed)
        assert len(got) == len(want) == UPDATES
        for step, (g, w) in enumerate(zip(got, want)):
            assert set(g) == set(w), (phase, step, set(g) ^ set(w))
            for key in w:
                tol = 1e-5 * max(1.0, abs(w[key]))
                assert abs(g[key] - w[key]) <= tol, f"{phase} update {step}: {key} {g[key]!r} vs reference {w[key]!r}"
                compared += 1
    assert compared > 2 * UPDATES * 30  # critic, actor and refinement terms for 3 tasks, both phases
    # and the weights the updates produced agree too
    for (n, p), q in zip(new.policy.named_parameters(), old.policy.parameters()):
        assert torch.allclose(p, q, atol=1e-5, rtol=1e-5), n
