from .linear_warmup_lr import LinearWarmupLR

__all__ = ['LinearWarmupLR']
