"""Images for the screen: grids upscaled nearest-neighbour (a 28x28 digit must read from the back of a
lecture hall), any upload or drawing turned into an MNIST-style x_0, and a recorded run as a GIF."""
import os

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw, ImageOps

from ..data import to_unit_range
from ..plots import image_grid

MAX_SIDE = 4096              # uploads larger than MAX_SIDE x MAX_SIDE pixels are refused before they are decoded
MAX_LAYERS = 4               # a drawing's layers (the app's sketchpads send one): Gradio decodes every one
DRAWING_PIXELS = 3 * MAX_SIDE * MAX_SIDE    # a drawing's parts together: a photo as background, its layer, the composite
# PIL refuses, from the header and before decoding, images over twice this many pixels: here MAX_SIDE^2. It also
# guards the uploads that Gradio decodes itself with PIL.
Image.MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE // 2


def open_checked(path, name=None, *, decode=True):
    """PIL's image of an uploaded file, refused with a message naming the file (never the server's path) when it
    is not an image, has more than MAX_SIDE x MAX_SIDE pixels (read from the header, before decoding) or, with
    `decode`, is truncated."""
    name = os.path.basename(str(name or path))
    try:
        image = Image.open(path)                           # reads the header only
    except Image.DecompressionBombError:                   # PIL's own limit, over twice MAX_IMAGE_PIXELS
        raise gr.Error(f"{name} has more than {MAX_SIDE} x {MAX_SIDE} pixels; at most {MAX_SIDE} x {MAX_SIDE} are "
                       "allowed (it becomes 28 x 28 anyway)") from None
    except (OSError, ValueError):
        raise gr.Error(f"{name} is not a readable image: use a PNG, JPEG, BMP, GIF or WebP file") from None
    if image.width * image.height > MAX_SIDE * MAX_SIDE:
        raise gr.Error(f"{name} has more than {MAX_SIDE} x {MAX_SIDE} pixels ({image.width} x {image.height}); at "
                       f"most {MAX_SIDE} x {MAX_SIDE} are allowed (it becomes 28 x 28 anyway)")
    try:
        if decode:
            image.load()
    except (OSError, ValueError, Image.DecompressionBombError):
        raise gr.Error(f"{name} is not a readable image (it may be truncated): use a PNG, JPEG, BMP, GIF or "
                       "WebP file") from None
    return image


class _CheckedUploads:
    """Gradio decodes an image input itself, before the handler, and a file it cannot read ends in its developer
    message, with the server's temp path. These components check every file of the value first (open_checked)."""

    def preprocess(self, payload):
        name, pixels = "the image", 0
        if payload is not None:
            layers = getattr(payload, "layers", None) or []
            if len(layers) > MAX_LAYERS:
                raise gr.Error(f"the drawing has {len(layers)} layers; at most {MAX_LAYERS} are allowed")
            for part in [payload, getattr(payload, "background", None), getattr(payload, "composite", None), *layers]:
                if getattr(part, "path", None) and not str(part.path).startswith("data:"):
                    name = getattr(part, "orig_name", None) or name
                    with open_checked(part.path, name, decode=False) as image:     # the header: Gradio decodes it once
                        pixels += image.width * image.height
            if pixels > DRAWING_PIXELS:
                raise gr.Error(f"the drawing's parts have {pixels:,} pixels together; at most {DRAWING_PIXELS:,} are "
                               "allowed (it becomes 28 x 28 anyway)")
        try:
            return super().preprocess(payload)
        except gr.Error:
            raise
        except (OSError, ValueError):                                        # truncated, or garbled past the header
            raise gr.Error(f"{os.path.basename(name)} is not a readable image (it may be truncated): use a PNG, "
                           "JPEG, BMP, GIF or WebP file") from None


    # the page draws these with Gradio's own components
    def get_block_name(self):                  # a template (Sketchpad) is drawn as its base (ImageEditor)
        shown = self.shown_as.__base__ if hasattr(self.shown_as, "is_template") else self.shown_as
        return shown.__name__.lower()

    get_block_class = get_block_name

    @classmethod
    def get_component_class_id(cls):
        return cls.shown_as.get_component_class_id()


class CheckedImage(_CheckedUploads, gr.Image):
    """gr.Image for uploads: checked before Gradio decodes them."""
    shown_as = gr.Image


class CheckedSketchpad(_CheckedUploads, gr.Sketchpad):
    """gr.Sketchpad whose uploaded or pasted background and layers are checked before Gradio decodes them."""
    shown_as = gr.Sketchpad


def show(x, scale=10, nrow=None):
    """Images [B, 1, H, W] in [-1, 1] as one big PIL image, upscaled nearest-neighbour."""
    nrow = nrow or int(np.ceil(np.sqrt(x.shape[0])))
    return image_grid(x, nrow, scale=scale, pad=1 if x.shape[0] > 1 else 0)


def show_uint8(images, scale):
    """`show` for uint8 images [B, H, W, C] (recorded frames) or [B, H, W] (drawings)."""
    return show(to_unit_range(images), scale)


def grid_scale(batch):
    return 10 if batch == 1 else 8 if batch <= 4 else 6


def to_unit(img_uint8):
    """One uint8 image [H, W] -> tensor [1, 1, H, W] in [-1, 1]."""
    return to_unit_range(np.asarray(img_uint8)[None])


def default_x0():
    """A ring ("0") drawn in code, so the forward tab works without any bundled examples."""
    yy, xx = np.mgrid[:28, :28]
    r = np.sqrt((yy - 14) ** 2 / 1.6 + (xx - 14) ** 2)
    return (np.clip(1 - abs(r - 7) / 2.2, 0, 1) * 255).astype(np.uint8)


def image_to_x0(image):
    """Any uploaded or drawn image -> uint8 [28, 28], white strokes on black like MNIST.

    Light backgrounds are inverted; drawings are cropped to their strokes, fitted into 20x20 and centred
    (MNIST's own preprocessing), so a sketch on a big canvas looks like a dataset image.
    """
    if isinstance(image, dict):            # gr.Sketchpad / ImageEditor value
        image = image.get("composite")
    if image is None:
        raise gr.Error("no image: upload a file or draw something first")
    if isinstance(image, (str, os.PathLike)):
        image = open_checked(image)
    if isinstance(image, Image.Image) and image.width * image.height > MAX_SIDE * MAX_SIDE:
        raise gr.Error(f"the image has {image.width} x {image.height} pixels; at most {MAX_SIDE} x {MAX_SIDE} are allowed")
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8))
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(white, image)
    gray = np.array(image.convert("L"), dtype=np.uint8)
    if gray.mean() > 127:                  # dark strokes on a light background: invert to MNIST style
        gray = 255 - gray
    ys, xs = np.nonzero(gray > 40)
    if len(ys) == 0:
        raise gr.Error("the image is empty (one colour, no strokes): draw or upload a shape first")
    if gray.shape == (28, 28):
        return gray
    crop = Image.fromarray(gray[ys.min():ys.max() + 1, xs.min():xs.max() + 1])
    crop = ImageOps.contain(crop, (20, 20), Image.LANCZOS)
    out = Image.new("L", (28, 28), 0)
    out.paste(crop, ((28 - crop.width) // 2, (28 - crop.height) // 2))
    return np.array(out, dtype=np.uint8)


def labelled_strip(x, labels, scale=4):
    """One row of images [n, C, H, W] with a text label under each (e.g. 't=250')."""
    row = image_grid(x, len(labels), scale=scale, pad=2)
    canvas = Image.new("RGB", (row.width, row.height + 34), "white")
    canvas.paste(row, (0, 0))
    draw, cell = ImageDraw.Draw(canvas), (x.shape[-1] + 2) * scale
    for k, text in enumerate(labels):
        draw.text((2 * scale + k * cell + cell // 2 - 4 * len(text), row.height + 4), text, fill="black", font_size=20)
    return canvas


def strip_gif(images, path, scale=8, ms=250):
    """An animated GIF that walks forwards and back through uint8 images [n, H, W, C] (one frame each)."""
    frames = [show_uint8(images[k:k + 1], scale).convert("P", palette=Image.ADAPTIVE) for k in range(len(images))]
    frames = frames + frames[-2:0:-1]                          # there and back again
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms, loop=0)
    return path
