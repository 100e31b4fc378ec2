"""The bench's scripted experts: Metaworld's hand-written policies, with their known loops fixed, plus noise.

:class:`ScriptedExpert` is Metaworld's hand-written policy for one task plus Gaussian action noise; its
variants (:data:`EXPERTS`) are the policies as shipped and ``corrected`` (:func:`_corrected_policy`).
The warm-up demos (:mod:`dual_actor.runtime.sim.demos`) and the simulated operator
(:mod:`dual_actor.runtime.operators.simulated`) act with it; this module imports neither.

Measured on this 2-core CPU (Metaworld 3.1.1, MuJoCo 3.3.0, noise on all 4 action dims):

- Scripted-expert success within 200 steps at noise 0.1 (100 episodes per task, seed 1):
  pick-place 1.00, pick-out-of-hole 0.84, peg-insert-side 0.83 (noise-free, 30 episodes:
  1.00 / 1.00 / 0.90).
- Median length of successful episodes at noise 0.1: 54 / 127 / 94 steps (the 100-episode
  evaluation). ``pick-out-of-hole-v3`` is slow and noise-sensitive: noise-free it succeeds in
  106 - 123 steps; with noise its failures at 200 steps are mostly slow successes (all 30
  noise-0.1 episodes succeed within 500 steps).
"""

from __future__ import annotations

import warnings

import numpy as np

from dual_actor.runtime.sim.bench import ACTION_DIM, resolve_task

EXPERTS = ("metaworld", "corrected")
"""Scripted experts: ``metaworld`` (Metaworld's policies as shipped) | ``corrected`` (the same, with the known
loops of a policy fixed where the bench needs it: :func:`_corrected_policy`)."""


def _corrected_policy(env_name: str):
    """Metaworld's scripted policy for ``env_name`` with its loops fixed, or None where it has none known.

    ``peg-insert-side-v3`` ("assemble the bolt"): the policy re-descends onto the peg whenever the hand is more
    than 2.5 cm above it, and that is about the height at which its own grasp holds the peg. A grasp a few mm
    low sends the hand down with the peg in it, then up again: a loop until the time limit (the policy alone
    fails 14 of 100 evaluation trials, 4 of the default 25). Once the gripper is closed (``obs[3] < 0.5``) the
    corrected policy allows 4 cm (98 of 100). Everything else is Metaworld's."""
    if env_name != "peg-insert-side-v3":
        return None
    from metaworld.policies.sawyer_peg_insertion_side_v3_policy import SawyerPegInsertionSideV3Policy

    class PegInsertSideCorrected(SawyerPegInsertionSideV3Policy):
        @staticmethod
        def _desired_pos(o_d):
            pos_curr, pos_peg = o_d["hand_pos"], o_d["peg_pos"]
            pos_hole = np.array([-0.35, o_d["goal_pos"][1], 0.16])
            holding = o_d["gripper_distance_apart"] < 0.5
            if np.linalg.norm(pos_curr[:2] - pos_peg[:2]) > 0.04:
                return pos_peg + np.array([0.0, 0.0, 0.3])
            if abs(pos_curr[2] - pos_peg[2]) > (0.04 if holding else 0.025):
                return pos_peg
            if np.linalg.norm(pos_peg[1:] - pos_hole[1:]) > 0.03:
                return pos_hole + np.array([0.4, 0.0, 0.0])
            return pos_hole

    return PegInsertSideCorrected()


class ScriptedExpert:
    """Metaworld's scripted policy for one task, plus optional Gaussian action noise.

    ``act(obs)`` returns ``clip(policy(obs) + N(0, noise^2), -1, 1)`` as float32 (``action_dim``,), the noise
    drawn from ``rng`` (the call's, else the constructor's, else a fresh unseeded one). ``variant``: one of
    :data:`EXPERTS` (``corrected``: :func:`_corrected_policy` where it has one, else Metaworld's).
    """

    action_dim = ACTION_DIM
    """Metaworld's scripted policies act in the bench's action space."""

    def __init__(self, task: str, noise: float = 0.1, rng: np.random.Generator | None = None,
                 variant: str = "metaworld") -> None:
        from metaworld.policies import ENV_POLICY_MAP

        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        if variant not in EXPERTS:
            raise ValueError(f"expert variant must be one of {EXPERTS}, got {variant!r}")
        self.task, self.env_name = resolve_task(task)
        if self.env_name not in ENV_POLICY_MAP:
            raise KeyError(f"Metaworld has no scripted policy for {self.env_name!r}")
        self.policy = (variant == "corrected" and _corrected_policy(self.env_name)) or ENV_POLICY_MAP[self.env_name]()
        self.variant = variant
        self.noise = float(noise)
        self.rng = rng

    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        with warnings.catch_warnings():
            # metaworld.policies.move() warns "Constant(s) may be too high" on most steps.
            warnings.simplefilter("ignore", UserWarning)
            action = np.asarray(self.policy.get_action(np.asarray(obs, dtype=np.float64)), dtype=np.float64)
        if self.noise > 0:
            rng = rng or self.rng
            if rng is None:
                rng = self.rng = np.random.default_rng()
            action = action + rng.normal(0.0, self.noise, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def make_expert(task: str, noise: float = 0.0, rng: np.random.Generator | None = None, variant: str = "corrected"):
    """The scripted expert of ``task`` in whichever simulated world has it: gym-hil's pick-cube
    (:class:`~dual_actor.runtime.sim.gym_hil.PickCubeExpert`; ``variant`` does not apply) or a Metaworld task
    (:class:`ScriptedExpert` of ``variant``). KeyError for a task neither knows."""
    from dual_actor.runtime.sim.gym_hil import TASK as GYM_HIL_TASK, PickCubeExpert

    if task == GYM_HIL_TASK:
        return PickCubeExpert(task, noise=noise, rng=rng)
    return ScriptedExpert(resolve_task(task)[0], noise=noise, rng=rng, variant=variant)


def task_env(task: str):
    """The env class of ``task``'s simulated world (a :class:`~dual_actor.runtime.env.RobotEnv` factory:
    ``(task, seed, max_episode_steps, cameras, image_size)``): gym-hil's for its pick-cube task, else the bench's
    :class:`~dual_actor.runtime.sim.bench.MetaworldTaskEnv`."""
    from dual_actor.runtime.sim.bench import MetaworldTaskEnv
    from dual_actor.runtime.sim.gym_hil import TASK as GYM_HIL_TASK, GymHilTaskEnv

    return GymHilTaskEnv if task == GYM_HIL_TASK else MetaworldTaskEnv
