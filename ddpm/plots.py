"""Images and figures: sample grids upscaled with nearest-neighbour so 28x28 digits read from afar."""
import numpy as np
from PIL import Image, ImageDraw

from .data import to_uint8


def upscale(image, scale):
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def image_grid(x, nrow, *, scale=4, pad=2, row_labels=None, label_width=110):
    """Tile images [N, C, H, W] (values in [-1, 1]) into rows of `nrow`, upscaled `scale` times.

    row_labels: one text per row, drawn in a margin on the left.
    """
    imgs = to_uint8(x)
    n, h, w, c = imgs.shape
    rows = (n + nrow - 1) // nrow
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for k, img in enumerate(imgs):
        r, col = divmod(k, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = img
    out = upscale(Image.fromarray(grid.squeeze(-1) if c == 1 else grid), scale).convert("RGB")
    if row_labels is None:
        return out
    canvas = Image.new("RGB", (out.width + label_width, out.height), "white")
    canvas.paste(out, (label_width, 0))
    draw = ImageDraw.Draw(canvas)
    row_h = (h + pad) * scale
    for r, text in enumerate(row_labels):
        draw.text((6, pad * scale + r * row_h + row_h // 2 - 8), str(text), fill="black", font_size=max(12, 4 * scale))
    return canvas
