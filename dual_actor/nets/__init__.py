from dual_actor.nets.consistency import ConsistencyPolicy, EDMScalings
from dual_actor.nets.critic import TaskCritics
from dual_actor.nets.refinement import LearnedCommandEncoder, RefinementActor
from dual_actor.nets.common import mlp

__all__ = ["ConsistencyPolicy", "EDMScalings", "TaskCritics", "LearnedCommandEncoder", "RefinementActor", "mlp"]
