"""Helpers for tests and the quick-start: synthetic data, tiny configs."""
from .synthetic import generate_synthetic_voc
from .tiny_configs import (CPU_CONFIG, PAPER_CONFIG, tiny_fsr_config,
                           tiny_fsr_model_cfg)

__all__ = [
    'CPU_CONFIG', 'PAPER_CONFIG', 'generate_synthetic_voc', 'tiny_fsr_config',
    'tiny_fsr_model_cfg'
]
