"""Utilities of mmseg-fsr.

Importing this package (which ``import mmseg_fsr`` and a config's
``custom_imports=dict(imports=['mmseg_fsr'])`` do) applies
:func:`allow_mmengine_checkpoints`: mmengine Runner checkpoints (resume,
``load_from``, ``tools/test.py``) load under torch >= 2.6's
``torch.load(weights_only=True)`` default. See ``checkpoint.py``.
"""
from .checkpoint import (allow_mmengine_checkpoints, is_applied,
                         mmengine_checkpoint_safe_globals,
                         trust_local_checkpoints)
from .checkpoint_fit import (CheckpointMismatchError, check_checkpoint_fits,
                             checkpoint_fit, load_checkpoint_strict)

allow_mmengine_checkpoints()

__all__ = [
    'CheckpointMismatchError', 'check_checkpoint_fits', 'checkpoint_fit',
    'load_checkpoint_strict', 'allow_mmengine_checkpoints', 'is_applied',
    'mmengine_checkpoint_safe_globals', 'trust_local_checkpoints'
]
