from .atomic_checkpoint_hook import AtomicCheckpointHook
from .checkpoint_fit_hook import CheckpointFitHook
from .deterministic_resume_hook import DeterministicResumeHook
from .fsr_teacher_hook import FSRTeacherHook
from .non_finite_loss_guard_hook import (LossExplosionError,
                                         NonFiniteLossError,
                                         NonFiniteLossGuardHook,
                                         NonFiniteWeightsError,
                                         TrainingDivergedError)
from .wsss_visualization_hook import WSSSVisualizationHook

__all__ = [
    'AtomicCheckpointHook', 'CheckpointFitHook', 'DeterministicResumeHook',
    'FSRTeacherHook', 'LossExplosionError',
    'NonFiniteLossError', 'NonFiniteLossGuardHook', 'NonFiniteWeightsError',
    'TrainingDivergedError', 'WSSSVisualizationHook'
]
