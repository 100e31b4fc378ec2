"""One learner update's losses, one file per net (as TorchRL's objectives): the critics (:mod:`.critic`), the
primary actor (:mod:`.actor`), the refinement actor (:mod:`.refine`: Eq. 8-11, its sub-command copies, and the
DSRL baseline's latent-noise policy).

Each ``*_loss(learner, batch, want_log)`` reads the nets and settings from the learner
(:class:`dual_actor.module.DualActorModule`: ``policy``, ``critics``, ``target_critics``, ``algo``, ...), returns
the loss and, when ``want_log``, its named scalars; the learner owns the optimizers and does the stepping
(``toggled_optimizer``, backward, clipping, step) and the order of the updates (Algorithm 1). The maths of every
equation is in :mod:`dual_actor.losses`.
"""
