"""Linear learning-rate warm-up that peaks at its ``end`` iteration."""
from mmengine.optim import LinearLR
from mmseg.registry import PARAM_SCHEDULERS


@PARAM_SCHEDULERS.register_module()
class LinearWarmupLR(LinearLR):
    """``LinearLR`` whose factor reaches ``end_factor`` at iteration ``end``.

    mmengine's ``LinearLR`` reaches it one step before ``end``; a warm-up of
    W iterations in the FSR / ToCo code (``CosWarmupAdamW``) peaks at
    iteration W, where the cosine decay starts: factor
    ``start + (1 - start) * t / W``. Arguments as ``LinearLR``.
    """

    def __init__(self, optimizer, *args, end: int, **kwargs) -> None:
        super().__init__(optimizer, *args, end=end + 1, **kwargs)
