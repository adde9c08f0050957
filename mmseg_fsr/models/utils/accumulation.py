"""Where the current forward pass stands in an accumulated optimiser step.

``AccumulatingIterBasedTrainLoop`` runs one optimiser step as
``accumulative_counts`` micro-batches and publishes, in the runtime info of
mmengine's current ``MessageHub``, how many micro-batches the step has and
which one is running. Batch statistics that must cover the whole step (the
DINO centres) read it; without the loop every forward pass is a whole step.
"""
from mmengine.logging import MessageHub

MICRO_BATCHES_KEY = 'accumulative_counts'
MICRO_BATCH_KEY = 'micro_batch'


def publish_micro_batch(index: int, count: int) -> None:
    """Announce micro-batch ``index`` (0-based) of ``count`` in the step.

    Not saved in checkpoints (``resumed=False``): a resumed run starts at a
    step boundary and announces its own micro-batches.
    """
    hub = MessageHub.get_current_instance()
    hub.update_info(MICRO_BATCHES_KEY, count, resumed=False)
    hub.update_info(MICRO_BATCH_KEY, index, resumed=False)


def ends_optimizer_step() -> bool:
    """Whether the running forward pass is the last of its optimiser step
    (always, without accumulation)."""
    hub = MessageHub.get_current_instance()
    count = hub.get_info(MICRO_BATCHES_KEY, 1)
    return hub.get_info(MICRO_BATCH_KEY, 0) >= count - 1
