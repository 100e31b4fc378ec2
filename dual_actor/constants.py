"""Batch keys and their shapes: one place for every module that builds or reads a batch.

A per-task transition batch is a ``dict[str, Tensor]``:

=================  ==========  ================================================================
key                shape       meaning
=================  ==========  ================================================================
``h``              B, Dh       frozen-backbone embedding of (s, l_task) (Eq. 3), cached at acting
``obs``            B, Do       observation features for critics / refinement actor (state)
``proprio``        B, Dp       proprioception
``action``         B, A        executed action (the human's where intervened), in [-1, 1]
``reward``         B           reward r_t
``done``           B           1.0 where s_{t+1} is terminal
``next_h``         B, Dh       embedding of s_{t+1}
``next_obs``       B, Do
``next_proprio``   B, Dp
``mc_return``      B           Monte-Carlo discounted return-to-go from t (Cal-QL bound)
``command``        B           refinement-command id in the policy's command vocabulary
``task``           B           task index
``intervention``   B           bool: the human's action (a correction) at this step
``from_demos``     B           bool: the row was sampled from a demo buffer (set by the sampler)
``policy_action``  B, A        the policy's proposal at that step (NaN where none is known); only in the rows
                               handed to ``TaskBuffers.add_episode``, which keeps it as ``correction``
``correction``     B, A        talk-and-tweak rows only: executed - proposed (NaN where no proposal is known)
``obs_images``     B, C, 3,    uint8 camera images of s_t, cameras in the policy's ``cameras``
                   H, W        order; only when the policy's image encoder uses images
``next_obs_images`` B, C, 3,   the same for s_{t+1}
                   H, W
=================  ==========  ================================================================

The image keys exist only with ``image_encoder`` != ``state``: the critics and the refinement actor
then see ``{"state": obs, "images": {camera: obs_images[:, c]}}``
(:meth:`dual_actor.policy.DualActorPolicy.encoder_input`). A backbone that reads images (SmolVLA)
needs none: its h is computed on the acting side and stored.

A training batch is ``{"tasks": [batch_task_0, ..., batch_task_{N-1}], "talk_tweak": batch | None}``.
"""

from data_tools.talk_tweak import NULL_COMMAND  # noqa: F401  (defined once, beside the talk-and-tweak rule)

H = "h"
OBS = "obs"
PROPRIO = "proprio"
ACTION = "action"
REWARD = "reward"
DONE = "done"
NEXT_H = "next_h"
NEXT_OBS = "next_obs"
NEXT_PROPRIO = "next_proprio"
MC_RETURN = "mc_return"
COMMAND = "command"
TASK = "task"
INTERVENTION = "intervention"
FROM_DEMOS = "from_demos"
POLICY_ACTION = "policy_action"
CORRECTION = "correction"
OBS_IMAGES = "obs_images"
NEXT_OBS_IMAGES = "next_obs_images"

TRANSITION_KEYS = (H, OBS, PROPRIO, ACTION, REWARD, DONE, NEXT_H, NEXT_OBS, NEXT_PROPRIO, MC_RETURN, COMMAND, TASK)

TASKS = "tasks"
TALK_TWEAK = "talk_tweak"

