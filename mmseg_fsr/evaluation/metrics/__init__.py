from .pseudo_label_metric import PseudoLabelMetric  # noqa: F401
