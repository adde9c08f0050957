from .cam_pseudo_labeller import CAMPseudoLabeller, stops_early, to_8bit_rgb

__all__ = ['CAMPseudoLabeller', 'stops_early', 'to_8bit_rgb']
