
from .cam_head import CAMHead  # noqa: F401
from .dino_projector import DINOProjector  # noqa: F401
from .largefov_head import LargeFOVHead  # noqa: F401
from .mca_aggregation_head import MCAAggregationHead  # noqa: F401
