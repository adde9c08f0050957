"""The mmseg loss conventions shared by the FSR losses."""
import torch.nn as nn


class NamedLoss(nn.Module):
    """A loss with mmseg's ``loss_weight`` and ``loss_name`` conventions.

    Args:
        loss_weight (float): Factor of the returned loss.
        loss_name (str): Key of the loss in the loss dict.
    """

    def __init__(self, loss_weight: float, loss_name: str) -> None:
        super().__init__()
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        """Key of the loss in the loss dict (mmseg convention)."""
        return self._loss_name
