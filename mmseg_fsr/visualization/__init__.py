from .cam_panel import (TITLE_HEIGHT, add_title, colorize_label,
                        draw_cam_panel, overlay_cam, overlay_mask)

__all__ = [
    'TITLE_HEIGHT', 'add_title', 'colorize_label', 'draw_cam_panel',
    'overlay_cam', 'overlay_mask'
]
