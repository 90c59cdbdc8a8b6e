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


EXAMPLES = "examples.safetensors"


def write_examples(name, root=None, per_class=100, folder=None):
    """Store up to `per_class` real test images per class as uint8 in <pretrained>/<name>/examples.safetensors."""
    import torch
    from safetensors.torch import save_file

    from .data import load_dataset
    test = load_dataset(name, root, train=False)
    keep = torch.cat([torch.nonzero(test.labels == c).flatten()[:per_class] for c in range(len(test.classes))])
    images = ((test.images[keep, 0] + 1) * 127.5).round().to(torch.uint8)        # back to the files' uint8 pixels
    path = os.path.join(folder or os.path.join(PRETRAINED_DIR, name), EXAMPLES)
    save_file({"images": images.contiguous(), "labels": test.labels[keep].contiguous()}, path)
    return path


def load_examples(name_or_folder):
    """(images uint8 [N, 28, 28], labels int64 [N]) bundled beside a model, for work without a dataset download."""
    from safetensors.torch import load_file
    folder = os.path.join(PRETRAINED_DIR, name_or_folder) if name_or_folder in BUNDLED else name_or_folder
    tensors = load_file(os.path.join(folder, EXAMPLES))
    return tensors["images"], tensors["labels"]
