from .wsss_runner import WSSSRunner, resolve_iteration_fractions

__all__ = ['WSSSRunner', 'resolve_iteration_fractions']
