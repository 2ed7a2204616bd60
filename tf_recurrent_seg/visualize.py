"""Pictures of predictions: mask overlays, heat maps, and labelled strips of panels."""

import numpy as np
from PIL import Image, ImageDraw

MASK_COLOR = (255, 40, 40)


def overlay_mask(image: np.ndarray, mask: np.ndarray, color=MASK_COLOR, opacity: float = 0.5) -> np.ndarray:
    """Blends `color` into the pixels of an RGB uint8 image where the boolean `mask` is True."""
    blended = image.astype(np.float32)
    blended[mask] = (1 - opacity) * blended[mask] + opacity * np.asarray(color, np.float32)
    return blended.astype(np.uint8)


def heat_map(values: np.ndarray) -> np.ndarray:
    """Maps a 2-D array to an RGB uint8 image (blue low, red high), scaled to its own min and max."""
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values, np.float32)
    rgb = np.stack([scaled, 1 - np.abs(2 * scaled - 1), 1 - scaled], axis=-1)
    return (rgb * 255).astype(np.uint8)


def save_strip(panels: list[np.ndarray], titles: list[str], path: str, panel_size: int = 200) -> None:
    """Saves RGB panels side by side, each resized to `panel_size` and titled above."""
    title_height = 18
    strip = Image.new("RGB", (panel_size * len(panels), panel_size + title_height), "white")
    draw = ImageDraw.Draw(strip)
    for index, (panel, title) in enumerate(zip(panels, titles)):
        picture = Image.fromarray(panel).resize((panel_size, panel_size), Image.NEAREST)
        strip.paste(picture, (index * panel_size, title_height))
        draw.text((index * panel_size + 4, 3), title[:32], fill="black")
    strip.save(path)
