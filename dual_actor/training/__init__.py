"""What ``python -m dual_actor.fit`` is made of besides its phases (learner side: imports Lightning).

* :mod:`.build`: objects from their typed config sections (the policy's config, the learner, the dataset, the
  robots of the online phase, the Trainer) and the checks a run makes before it writes anything.
* :mod:`.callbacks`: the Lightning callbacks of a run (atomic ``last.ckpt``, process RNG state, curve points).
* :mod:`.evaluation`: the run's evaluations from its config (the final table, with spoken commands, robot B).
* :mod:`.warmup_cache`: one warm-up shared by the runs whose warm-up config agrees (``warmup.share=true``).
"""
