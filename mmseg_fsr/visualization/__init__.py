from .cam_panel import colorize_label, draw_cam_panel, overlay_cam

__all__ = ['colorize_label', 'draw_cam_panel', 'overlay_cam']
