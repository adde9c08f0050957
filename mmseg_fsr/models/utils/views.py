"""Per-view backbone features of a two-view batch."""
from dataclasses import dataclass
from typing import Optional, Tuple

from torch import Tensor


@dataclass
class ViewFeatures:
    """Backbone outputs of one view.

    Attributes:
        maps (tuple[Tensor]): The backbone's maps, auxiliary layer first and
            final (normed) layer last, each (B, C, h, w).
        tokens (Tensor, optional): The last layer's patch tokens before the
            final norm, (B, N, C).
    """
    maps: Tuple[Tensor, ...]
    tokens: Optional[Tensor] = None

    @property
    def final(self) -> Tensor:
        """Final map, (B, C, h, w)."""
        return self.maps[-1]

    @property
    def aux(self) -> Tensor:
        """Auxiliary-layer map, (B, C, h, w)."""
        return self.maps[0]

    @property
    def patches(self) -> Tensor:
        """Final (normed) patch tokens, (B, N, C)."""
        return self.final.flatten(2).transpose(1, 2)


def split_views(maps: Tuple[Tensor, ...], tokens: Optional[Tensor],
                sizes: Tuple[int, ...]) -> Tuple[ViewFeatures, ...]:
    """Split the outputs of one batched forward into per-view features.

    Args:
        maps (tuple[Tensor]): Backbone maps of ``cat(views)``.
        tokens (Tensor, optional): Last-layer tokens of ``cat(views)``.
        sizes (tuple[int]): Images per view, in batch order.

    Returns:
        tuple[ViewFeatures]: One per view.
    """
    per_map = [m.split(sizes) for m in maps]
    per_token = tokens.split(sizes) if tokens is not None else [None] * len(
        sizes)
    return tuple(
        ViewFeatures(tuple(m[i] for m in per_map), per_token[i])
        for i in range(len(sizes)))
