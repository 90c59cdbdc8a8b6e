"""The bundled models: ddpm.load_pretrained("mnist" | "fashion_mnist" | folder | Hub id).

Each bundled folder (pretrained/<name>/ in the repository; installed with the package as ddpm/bundled/) holds
the model (model.safetensors + config.json), its judge classifier, about 100 real test images per class
(examples.safetensors) and a model card (README.md) with the data, the recipe, the wall time and the measured scores.
"""
import os

from safetensors.torch import load_file

from .diffusion import load_model

_HERE = os.path.dirname(os.path.abspath(__file__))
# `pip install .` copies pretrained/ into the package as ddpm/bundled (pyproject.toml); a checkout or an editable
# install reads pretrained/ beside the package
BUNDLED_DIR = next((d for d in (os.path.join(_HERE, "bundled"), os.path.join(os.path.dirname(_HERE), "pretrained"))
                    if os.path.isdir(d)), os.path.join(_HERE, "bundled"))
BUNDLED = ("mnist", "fashion_mnist")
EXAMPLES = "examples.safetensors"


def bundled_folder(name_or_folder):
    """The folder of a bundled model by name; any other value is taken as a folder already."""
    return os.path.join(BUNDLED_DIR, name_or_folder) if name_or_folder in BUNDLED else os.fspath(name_or_folder)


def load_pretrained(name_or_path, device="cpu"):
    """A bundled model by name, a checkpoint folder, or a Hugging Face Hub repo id; EMA weights, eval mode."""
    return load_model(bundled_folder(name_or_path), device=device, names=BUNDLED).eval()


def load_examples(name_or_folder):
    """(images uint8 [N, 28, 28], labels int64 [N]) bundled beside a model, for work without a dataset download."""
    tensors = load_file(os.path.join(bundled_folder(name_or_folder), EXAMPLES))
    return tensors["images"], tensors["labels"]
