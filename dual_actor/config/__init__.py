"""The typed config: one declaration per key (type, default, one-line meaning), the schema behind conf/.

* :mod:`dual_actor.config.fields`: :func:`setting` (a field with its meaning and what the warm-up sees of it),
  :class:`ConfigError`, the walks over a schema (unknown keys, the warm-up's view).
* :mod:`dual_actor.config.policy`: :class:`PolicyArch` and :class:`PolicyConfig`, the deployable policy's
  (what ``config.json`` of a policy folder holds). Imported by the robot side: no Hydra here.
* :mod:`dual_actor.config.algo`: :class:`LearnerConfig` (the learner's) and :class:`AlgoConfig` (``conf/algo``).
* :mod:`dual_actor.config.sections`: the run, data, warm-up, online, eval, trainer and env sections.
* :mod:`dual_actor.config.groups`: the options of the backbone / text_encoder / image_encoder / operator /
  runtime groups.
* :mod:`dual_actor.config.store`: registers every schema in Hydra's ConfigStore (``conf/**`` YAML files name
  them in their defaults lists), checks a composed config, and turns a composition error into one line.

This package's ``__init__`` imports nothing, so that the robot side can import the policy's config alone.
"""
