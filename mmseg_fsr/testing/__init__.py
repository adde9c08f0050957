"""Helpers for tests and examples: tiny FSR configs on synthetic data."""
from .tiny_configs import CPU_CONFIG, tiny_fsr_config, tiny_fsr_model_cfg

__all__ = ['CPU_CONFIG', 'tiny_fsr_config', 'tiny_fsr_model_cfg']
