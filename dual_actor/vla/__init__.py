"""The bench VLA (issue 28): lerobot's SmolVLA trained here on the bench's rendered demos, then frozen as h.

- :mod:`~dual_actor.vla.smolvlm`: a SmolVLM folder (config, word-level tokenizer, processor) built locally.
- :mod:`~dual_actor.vla.bench`: training (:func:`~dual_actor.vla.bench.train_bench_vla`), acting
  (:class:`~dual_actor.vla.bench.VLAActor`) and evaluating it alone (:func:`~dual_actor.vla.bench.evaluate_vla`).
- :mod:`~dual_actor.vla.probe`: what h knows of the hidden object and goal positions (a held-out linear probe).

``python -m dual_actor.train_vla`` is the command (docs/vla.md). lerobot and transformers are imported on use.
"""
