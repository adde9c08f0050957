from .wsss_runner import WSSSRunner, build_runner, resolve_iteration_fractions

__all__ = ['WSSSRunner', 'build_runner', 'resolve_iteration_fractions']
