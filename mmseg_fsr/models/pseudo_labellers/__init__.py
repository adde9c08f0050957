from .cam_pseudo_labeller import CAMPseudoLabeller, to_8bit_rgb

__all__ = ['CAMPseudoLabeller', 'to_8bit_rgb']
