"""The bundled models: ddpm.load_pretrained("mnist" | "fashion_mnist" | folder | Hub id)."""
import os

from .checkpoint import load_model

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained")
BUNDLED = ("mnist", "fashion_mnist")


def load_pretrained(name_or_path, device="cpu"):
    """A bundled model by name, a checkpoint folder, or a Hugging Face Hub repo id; EMA weights, eval mode."""
    if name_or_path in BUNDLED:
        name_or_path = os.path.join(PRETRAINED_DIR, name_or_path)
    return load_model(name_or_path, device=device).eval()
