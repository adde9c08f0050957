"""Where a Runner's training stands, as the model sees it."""
from typing import NamedTuple, Optional

from mmengine.logging import MessageHub


class TrainingProgress(NamedTuple):
    """The iteration about to run, the run's length and the training data
    set's meta information (``None`` where the runner has none)."""
    cur_iter: int
    max_iters: int
    dataset_meta: Optional[dict]


def runner_training_progress() -> Optional[TrainingProgress]:
    """The progress that mmengine's Runner publishes, if it is training.

    mmengine's ``RuntimeInfoHook``, which every Runner registers among its
    default hooks, writes ``iter`` (before every iteration), ``max_iters``,
    ``dataset_meta`` and ``loop_stage='train'`` (before training) into the
    current ``MessageHub``. Reading them there lets a model follow the run
    whatever hooks a config lists, and works through DDP wrappers, which do
    not call the model's ``train_step``.

    Returns:
        TrainingProgress, optional: None outside a Runner's training loop
        (validation inside it included), or without ``RuntimeInfoHook``.
    """
    hub = MessageHub.get_current_instance()
    if hub.get_info('loop_stage') != 'train' or \
            hub.get_info('max_iters') is None:
        return None
    return TrainingProgress(
        hub.get_info('iter'), hub.get_info('max_iters'),
        hub.get_info('dataset_meta'))
