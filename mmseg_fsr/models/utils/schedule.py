"""Iterations given as counts or as fractions of a training run."""
from typing import Union


def iteration_of(value: Union[int, float], max_iters: int) -> int:
    """Resolve an iteration given absolutely or as a fraction of the run.

    An ``int`` is an iteration; a ``float`` in [0, 1] is that fraction of
    ``max_iters`` (rounded down), so that shortening a run keeps a recipe's
    shape.

    Args:
        value (int | float): Iteration or fraction.
        max_iters (int): Length of the run.

    Returns:
        int: The iteration.

    Raises:
        ValueError: If ``value`` is negative or a fraction above 1.
    """
    if isinstance(value, bool) or value < 0:
        raise ValueError(f'an iteration must be >= 0, got {value!r}')
    if isinstance(value, float):
        if value > 1:
            raise ValueError('a fractional iteration must be in [0, 1] (of '
                             f'max_iters), got {value}; write an iteration '
                             'count as an int')
        return int(value * max_iters)
    return int(value)
