from .cam_panel import (TITLE_HEIGHT, add_title, colorize_label,
                        draw_cam_panel, overlay_cam, overlay_mask)
from .wsss_local_visualizer import WSSSLocalVisualizer

__all__ = [
    'TITLE_HEIGHT', 'add_title', 'colorize_label', 'draw_cam_panel',
    'overlay_cam', 'overlay_mask', 'WSSSLocalVisualizer'
]
