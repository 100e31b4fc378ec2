"""Real-robot adapters: each implements :class:`dual_actor.runtime.env.RobotEnv` and
:class:`dual_actor.runtime.env.Arm` (robot side; nothing here imports the learner).

- :mod:`.franka_server`: a Franka arm through the HIL-SERL / ConRFT robot server's HTTP protocol
  (``FrankaServerEnv``); :mod:`.franka_sim_server` serves that protocol from the bench simulation.
- :mod:`.lerobot_robot`: any lerobot 0.4.4 ``Robot``; :mod:`.lerobot_sim` a lerobot ``Robot`` backed by the
  bench simulation.

Hydra ``_target_``s name the modules' classes in full (e.g. ``dual_actor.robots.franka_server.FrankaServerEnv``):
this package imports none of them, so one adapter's dependencies never load with another's.
"""
