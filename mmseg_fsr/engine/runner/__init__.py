from .accumulating_train_loop import AccumulatingIterBasedTrainLoop
from .wsss_runner import WSSSRunner, build_runner, resolve_iteration_fractions

__all__ = [
    'AccumulatingIterBasedTrainLoop', 'WSSSRunner', 'build_runner',
    'resolve_iteration_fractions'
]
