"""Load mmengine checkpoints under torch >= 2.6 (``weights_only=True``).

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``: only
tensors, containers and primitive types (plus an explicit allowlist) may be
unpickled. mmengine 0.10.7 calls ``torch.load(filename, map_location=...)``
without ``weights_only``, and every checkpoint the :class:`~mmengine.runner.
Runner` saves contains more than that in its ``message_hub`` entry, so
``resume=True``, ``load_from`` and ``tools/test.py`` fail with::

    _pickle.UnpicklingError: Weights only load failed ...
    Unsupported global: GLOBAL mmengine.logging.history_buffer.HistoryBuffer

:func:`allow_mmengine_checkpoints` keeps ``weights_only=True`` and registers
(``torch.serialization.add_safe_globals``) exactly the globals that a Runner
checkpoint (meta, state_dict, message_hub, optimizer, param_schedulers) was
found to contain, determined by saving one with mmengine 0.10.7 / numpy 2 and
listing ``torch.serialization.get_unsafe_globals_in_checkpoint``:

* ``mmengine.logging.history_buffer.HistoryBuffer`` -- the message hub's
  log scalars;
* ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``
  and the numeric/bool ``numpy.dtypes.*DType`` classes -- the buffers'
  arrays (the unpickler checks the dtype *instance's* class when it is built);
* ``numpy._core.multiarray.scalar`` -- numpy scalars in the runtime info
  (``eta``, ``best_score``, metric values);
* the numpy 1.x spellings ``numpy.core.multiarray._reconstruct`` /
  ``numpy.core.multiarray.scalar`` mapped to the same functions, so
  checkpoints written under numpy < 2 load too;
* ``builtins.getattr`` -- ``HistoryBuffer.__getstate__`` saves its statistics
  methods as ``getattr(HistoryBuffer, 'min')`` etc. The real ``getattr``
  would make the allowlist meaningless, so the name is bound to
  :func:`_history_buffer_getattr`, which only resolves attributes of
  ``HistoryBuffer`` that are registered statistics methods and raises
  ``UnpicklingError`` for anything else.

Nothing else is allowed, so an untrusted ``.pth`` still cannot run code.
``mmseg_fsr.utils`` applies this when it is imported (i.e. on
``import mmseg_fsr`` and through ``custom_imports``), logging one INFO line.

For checkpoints that hold other Python objects (e.g. from other codebases),
:func:`trust_local_checkpoints` is an explicit opt-in that makes mmengine
load *local* files with ``weights_only=False``. It is never applied
automatically.
"""
import logging
import os.path as osp
import pickle
from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging import print_log

__all__ = [
    'allow_mmengine_checkpoints', 'is_applied',
    'mmengine_checkpoint_safe_globals', 'trust_local_checkpoints'
]

SafeGlobal = Union[Callable, Tuple[Callable, str]]

_APPLIED = False
# registered by every HistoryBuffer.__init__ (the class dict is empty before)
_DEFAULT_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})


def _numpy_core():
    """``numpy._core`` (numpy >= 2) or ``numpy.core`` (numpy 1.x)."""
    core = getattr(np, '_core', None)
    if core is None or not hasattr(core, 'multiarray'):
        core = np.core
    return core


def _numpy_dtype_classes() -> List[type]:
    """The dtype classes of numeric and bool numpy types (numpy >= 1.25)."""
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is None:  # numpy < 1.25: dtype instances are plain np.dtype
        return []
    classes = []
    for name in getattr(dtypes, '__all__', ()):
        cls = getattr(dtypes, name, None)
        scalar_type = getattr(cls, 'type', None)
        if isinstance(scalar_type, type) and issubclass(
                scalar_type, (np.number, np.bool_)):
            classes.append(cls)
    return classes


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Restricted stand-in for ``builtins.getattr`` while unpickling.

    Only ``getattr(HistoryBuffer, <registered statistics method>)`` -- what
    ``HistoryBuffer.__getstate__`` produces -- is resolved.
    """
    from mmengine.logging import HistoryBuffer
    allowed = _DEFAULT_STATISTICS.union(HistoryBuffer._statistics_methods)
    if (obj is HistoryBuffer and isinstance(name, str) and name in allowed
            and not name.startswith('_')
            and callable(getattr(HistoryBuffer, name, None))):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed by mmseg_fsr\'s '
        'weights_only allowlist (only HistoryBuffer statistics methods are).')


def mmengine_checkpoint_safe_globals() -> List[SafeGlobal]:
    """Return the allowlist for ``torch.serialization.add_safe_globals``.

    Entries are either callables/classes (registered under their own
    ``module.qualname``) or ``(callable, 'pickled.name')`` pairs.
    """
    from mmengine.logging import HistoryBuffer

    core = _numpy_core()
    reconstruct = core.multiarray._reconstruct
    scalar = core.multiarray.scalar
    safe: List[SafeGlobal] = [
        HistoryBuffer,
        np.ndarray,
        np.dtype,
        # numpy 2 pickles as numpy._core.*, numpy 1.x as numpy.core.*
        (reconstruct, 'numpy._core.multiarray._reconstruct'),
        (reconstruct, 'numpy.core.multiarray._reconstruct'),
        (scalar, 'numpy._core.multiarray.scalar'),
        (scalar, 'numpy.core.multiarray.scalar'),
        (_history_buffer_getattr, 'builtins.getattr'),
    ]
    safe.extend(_numpy_dtype_classes())
    return safe


def allow_mmengine_checkpoints() -> bool:
    """Allow ``torch.load(weights_only=True)`` to read mmengine checkpoints.

    Registers :func:`mmengine_checkpoint_safe_globals` with
    ``torch.serialization.add_safe_globals``. Idempotent; logs one INFO line
    through mmengine's logger the first time it is applied.

    Returns:
        bool: ``True`` if the allowlist is (now) registered, ``False`` when
        this torch has no ``add_safe_globals`` (torch < 2.4, which does not
        default to ``weights_only=True`` either, so nothing is needed).
    """
    global _APPLIED
    if _APPLIED:
        return True
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is None:
        return False
    safe = mmengine_checkpoint_safe_globals()
    add_safe_globals(safe)
    _APPLIED = True
    print_log(
        'mmseg_fsr.utils.allow_mmengine_checkpoints: torch.load keeps '
        'weights_only=True; allowlisted the types mmengine Runner '
        f'checkpoints contain ({len(safe)} globals: HistoryBuffer, numpy '
        'arrays/scalars/dtypes, restricted getattr)',
        logger='current',
        level=logging.INFO)
    return True


def is_applied() -> bool:
    """Whether :func:`allow_mmengine_checkpoints` has been applied."""
    return _APPLIED


def trust_local_checkpoints() -> None:
    """Opt-in: load *local* checkpoint files with ``weights_only=False``.

    Overrides mmengine's local-path scheme of
    :class:`mmengine.runner.CheckpointLoader`. Only call this for files you
    trust: unpickling can execute arbitrary code. Remote (http, hub) loaders
    are left alone.
    """
    from mmengine.runner import CheckpointLoader

    def load_from_local_trusted(filename: str, map_location=None):
        filename = osp.expanduser(filename)
        if not osp.isfile(filename):
            raise FileNotFoundError(f'{filename} can not be found.')
        return torch.load(
            filename, map_location=map_location, weights_only=False)

    CheckpointLoader.register_scheme(
        prefixes='', loader=load_from_local_trusted, force=True)
    print_log(
        'mmseg_fsr: local checkpoints are now loaded with '
        'torch.load(weights_only=False) (trust_local_checkpoints)',
        logger='current',
        level=logging.WARNING)
