"""Stop a run that loads a checkpoint which does not fit its model."""
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from ...utils.checkpoint_fit import check_checkpoint_fits


@HOOKS.register_module()
class CheckpointFitHook(Hook):
    """Refuse a checkpoint with missing keys or tensors of other shapes.

    mmengine's ``Runner`` loads ``load_from`` (``tools/test.py``'s
    checkpoint, a resumed run) non-strictly: what does not fit only gives a
    warning, and a test then scores a partly random model and exits 0. In
    ``after_load_checkpoint``, which the Runner calls before it loads the
    weights, this hook compares the checkpoint with the model and raises
    :class:`~mmseg_fsr.utils.checkpoint_fit.CheckpointMismatchError`
    listing every missing key and every size mismatch with both shapes.
    ``tools/test.py`` adds it (``--allow-partial-checkpoint`` sets
    ``allow_partial``); add it to ``custom_hooks`` for ``mim test`` or
    mmseg's own tools.

    Args:
        allow_partial (bool): Load what fits, logging the rest as a
            warning. Defaults to False.
        opt_in (str): How the user allows partial loading, named in the
            error. Defaults to this hook's argument.
    """

    priority = 'VERY_HIGH'

    def __init__(self,
                 allow_partial: bool = False,
                 opt_in: str = 'allow_partial=True in the CheckpointFitHook '
                 'of custom_hooks') -> None:
        self.allow_partial = allow_partial
        self.opt_in = opt_in

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Compare the checkpoint with ``runner.model`` before it loads."""
        source = getattr(runner, '_load_from', None) or 'the checkpoint'
        check_checkpoint_fits(runner.model, checkpoint, source,
                              self.allow_partial, self.opt_in)
