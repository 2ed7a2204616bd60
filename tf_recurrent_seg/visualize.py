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


def label_palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours for class ids: the PASCAL VOC colour map (background 0 is black).

    Each id's bits are spread over the high bits of R, G and B (VOC devkit `labelcolormap`), so ids up to
    255 get distinct colours and the first ones are far apart: 1 (128, 0, 0), 2 (0, 128, 0), 3 (128, 128, 0).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or not 1 <= num_classes <= 256:
        raise ValueError(f"num_classes must be an integer in [1, 256], got {num_classes!r}")
    palette = np.zeros((num_classes, 3), np.uint8)
    for index in range(num_classes):
        red = green = blue = 0
        value = index
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (red, green, blue)
    return palette


def colorize_labels(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) integer class ids -> (H, W, 3) uint8 RGB with `palette[id]`; ids outside the palette are an error."""
    labels = np.asarray(labels)
    palette = np.asarray(palette, np.uint8)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be an integer (H, W) map of class ids, got dtype {labels.dtype} shape {labels.shape}"
        )
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ValueError(f"palette must have shape (num_classes, 3), got {palette.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= len(palette)):
        raise ValueError(
            f"labels hold ids from {labels.min()} to {labels.max()} but the palette has {len(palette)} colours"
        )
    return palette[labels]


def _fit_height(panel: np.ndarray, height: int) -> Image.Image:
    """The panel as a PIL image `height` pixels tall, aspect ratio kept (nearest: label colours stay exact)."""
    picture = Image.fromarray(panel)
    width = max(1, round(picture.width * height / picture.height))
    return picture.resize((width, height), Image.NEAREST)


def save_panels(panels: list[np.ndarray], titles: list[str], path: str, panel_height: int = 200) -> None:
    """Like `save_strip`, but each RGB panel keeps its aspect ratio (resized to `panel_height` rows)."""
    panels_image(panels, titles, panel_height).save(path)


def panels_image(panels: list[np.ndarray], titles: list[str], panel_height: int = 200) -> Image.Image:
    """The strip `save_panels` writes: RGB panels side by side, aspect ratio kept, each titled above."""
    title_height = 18
    pictures = [_fit_height(panel, panel_height) for panel in panels]
    strip = Image.new("RGB", (sum(p.width for p in pictures) or 1, panel_height + title_height), "white")
    draw = ImageDraw.Draw(strip)
    left = 0
    for picture, title in zip(pictures, titles):
        strip.paste(picture, (left, title_height))
        draw.text((left + 4, 3), title[: max(4, picture.width // 7)], fill="black")
        left += picture.width
    return strip


def word_step_panels(
    image: np.ndarray, words: list[str], word_masks: list[np.ndarray]
) -> tuple[list[np.ndarray], list[str]]:
    """(panels, titles) of the prediction after each word (papers' Figures 1 and 5): the input, then each word's
    mask over it."""
    return [image] + [overlay_mask(image, mask) for mask in word_masks], ["input"] + [f"after '{w}'" for w in words]


def word_response_panels(
    image: np.ndarray, words: list[str], responses: list[np.ndarray]
) -> tuple[list[np.ndarray], list[str]]:
    """(panels, titles) of the mLSTM response map after each word (Figure 6): the input, then each map as a heat
    map scaled to its own range."""
    return [image] + [heat_map(response) for response in responses], ["input"] + [f"response '{w}'" for w in words]


def overlay_labels(image: np.ndarray, labels: np.ndarray, palette: np.ndarray, opacity: float = 0.6) -> np.ndarray:
    """Blends each pixel's class colour (`palette[label]`) into an RGB uint8 image; background (class 0) is left
    as it is, so the parts stand out on the picture."""
    colours = colorize_labels(labels, palette).astype(np.float32)
    blended = image.astype(np.float32)
    foreground = np.asarray(labels) != 0
    blended[foreground] = (1 - opacity) * blended[foreground] + opacity * colours[foreground]
    return blended.astype(np.uint8)


def save_label_png(labels: np.ndarray, palette: np.ndarray, path) -> None:
    """A palette PNG of (H, W) class ids: each pixel's value is its class id, shown in `palette`'s colours."""
    label_image = Image.fromarray(np.asarray(labels).astype(np.uint8), mode="P")
    label_image.putpalette(np.asarray(palette, np.uint8).flatten().tolist())
    label_image.save(path)


def save_legend_strip(
    image: np.ndarray,
    colour_labels: np.ndarray,
    class_names,
    path: str,
    palette: np.ndarray | None = None,
    panel_height: int = 240,
) -> None:
    """Saves image | colour map | legend (a colour swatch and the name of every class) side by side.

    Args:
        image: the RGB uint8 (H, W, 3) input.
        colour_labels: the prediction, either already coloured (H, W, 3) uint8 or (H, W) integer class ids
            (coloured here with `palette`).
        class_names: one name per class id, in id order.
        path: the PNG to write.
        palette: (num_classes, 3) colours of the legend (and of integer `colour_labels`); default
            `label_palette(len(class_names))`.
        panel_height: height of the image and colour-map panels (aspect ratio kept).
    """
    class_names = [str(name) for name in class_names]
    if not class_names:
        raise ValueError("class_names is empty")
    palette = label_palette(len(class_names)) if palette is None else np.asarray(palette, np.uint8)
    if len(palette) < len(class_names):
        raise ValueError(f"the palette has {len(palette)} colours for {len(class_names)} class names")
    colour_labels = np.asarray(colour_labels)
    if colour_labels.ndim == 2:
        colour_labels = colorize_labels(colour_labels, palette)
    if colour_labels.ndim != 3 or colour_labels.shape[-1] != 3 or colour_labels.dtype != np.uint8:
        raise ValueError(
            "colour_labels must be (H, W, 3) uint8 or (H, W) class ids, "
            f"got {colour_labels.dtype} {colour_labels.shape}"
        )
    title_height, row_height, swatch = 18, 16, 12
    pictures = [_fit_height(np.asarray(image, np.uint8), panel_height), _fit_height(colour_labels, panel_height)]
    legend_width = 24 + 7 * max(len(name) for name in class_names) + 8
    height = max(panel_height, row_height * len(class_names)) + title_height
    strip = Image.new("RGB", (pictures[0].width + pictures[1].width + legend_width, height), "white")
    draw = ImageDraw.Draw(strip)
    left = 0
    for picture, title in zip(pictures, ("input", "prediction")):
        strip.paste(picture, (left, title_height))
        draw.text((left + 4, 3), title, fill="black")
        left += picture.width
    draw.text((left + 4, 3), "classes", fill="black")
    for index, name in enumerate(class_names):
        top = title_height + index * row_height + 2
        draw.rectangle(
            [left + 4, top, left + 4 + swatch, top + swatch], fill=tuple(int(c) for c in palette[index]), outline="gray"
        )
        draw.text((left + 24, top), name, fill="black")
    strip.save(path)
