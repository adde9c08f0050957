"""mmseg-fsr: Progressive Feature Self-Reinforcement for single-stage WSSS.

Importing this package registers every module into MMSegmentation's
registries (``MODELS``, ``HOOKS``, ``TRANSFORMS``, ``DATASETS``, ``METRICS``,
``VISUALIZERS``, ...), so configs only need
``custom_imports = dict(imports=['mmseg_fsr'])``.
"""
from . import (datasets, engine, evaluation, models, utils,  # noqa: F401
               visualization)
from .version import __version__

__all__ = ['__version__']
