"""Build-time checks of module arguments."""


def check_unit_interval(**values: float) -> None:
    """Raise if an argument that is a ratio or threshold is outside [0, 1].

    Args:
        **values (float): Arguments by name.

    Raises:
        ValueError: Naming the first argument out of range.
    """
    for name, value in values.items():
        if not 0 <= value <= 1:
            raise ValueError(f'{name} must be in [0, 1], got {value}')
