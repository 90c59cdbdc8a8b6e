"""Shared fixtures: a tiny DDPM factory and fake dataset files in torchvision's on-disk formats."""
import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torchvision

from ddpm import DDPM

# The test machine has 2 shared CPU cores: one intra-op thread avoids oversubscription, which
# otherwise makes these tiny networks an order of magnitude slower. The app's handlers and the app
# servers the tests start read the same budget (ddpm/app/cores.py).
torch.set_num_threads(1)
os.environ["DDPM_APP_TORCH_THREADS"] = "1"

TINY_NET = dict(base_channels=8, channel_mults=(1, 2), attn_levels=(1,), emb_channels=32, groups=4)


@pytest.fixture
def make_ddpm():
    """make_ddpm(image_size=28, num_classes=10, T=50, ...) -> a tiny DDPM in eval mode, seeded init."""

    def make(image_size=28, num_classes=10, T=50, schedule="linear", seed=0, in_channels=1, **kwargs):
        kwargs.setdefault("net", TINY_NET)
        with torch.random.fork_rng():     # module init draws from the global RNG; keep it out of other tests
            torch.manual_seed(seed)
            ddpm = DDPM(image_size=image_size, in_channels=in_channels, num_classes=num_classes,
                        schedule=schedule, T=T, **kwargs)
            # conv_out starts at zero ("predict zero noise"); random weights make eps depend on x_t, t and y
            torch.nn.init.normal_(ddpm.net.conv_out.weight, std=0.05)
            torch.nn.init.normal_(ddpm.net.conv_out.bias, std=0.05)
        return ddpm.eval()

    return make


# ---------------------------------------------------------------------------------------------
# Fake datasets in torchvision's layout
# ---------------------------------------------------------------------------------------------

N_TRAIN, N_TEST = 6, 4
CIFAR10_NAMES = [f"c10_{i}" for i in range(10)]
CIFAR100_NAMES = [f"c100_{i}" for i in range(100)]


def _write_idx(path, array):
    """IDX format (LeCun): big-endian magic 0x0000080{ndim} (type 0x08 = uint8), the dims, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    with open(path, "wb") as f:
        f.write(struct.pack(">I", 0x0800 + array.ndim))       # 2051 for images, 2049 for labels
        f.write(struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _images(rng, n, shape):
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


@pytest.fixture
def fake_data(tmp_path, monkeypatch):
    """A data root with a handful of images of MNIST, FashionMNIST, CIFAR-10 and CIFAR-100.

    Returns (root, expected) with expected[name][split] = (uint8 images [N, C, H, W], int labels [N]).
    """
    # torchvision's CIFAR classes check the md5 of every batch file against the real CIFAR archives
    # (cifar.check_integrity in _check_integrity and _load_meta); our hand-written files cannot match,
    # so only that check is replaced by "the file exists". Everything else (unpickling, reshaping,
    # HWC transpose, class names) is torchvision's real loading code. MNIST checks no md5 for raw files.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity",
                        lambda fpath, md5=None: os.path.isfile(fpath))
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    expected = {}

    for name, folder in (("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")):
        raw = root / folder / "raw"
        raw.mkdir(parents=True)
        expected[name] = {}
        for split, prefix, n in (("train", "train", N_TRAIN), ("test", "t10k", N_TEST)):
            images = _images(rng, n, (28, 28))
            labels = np.arange(n, dtype=np.uint8) % 10
            _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
            _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
            expected[name][split] = (images[:, None], labels.astype(np.int64))

    c10 = root / "cifar-10-batches-py"
    c10.mkdir(parents=True)
    train_parts = []
    for i in range(1, 6):
        data = _images(rng, 2, (3072,))              # row-major [N, 3 * 32 * 32], channels first
        labels = [(2 * i + k) % 10 for k in range(2)]
        _pickle(c10 / f"data_batch_{i}", {"data": data, "labels": labels})
        train_parts.append((data, labels))
    test = _images(rng, N_TEST, (3072,))
    _pickle(c10 / "test_batch", {"data": test, "labels": [9, 8, 7, 6]})
    _pickle(c10 / "batches.meta", {"label_names": CIFAR10_NAMES})
    expected["cifar10"] = {
        "train": (np.concatenate([d for d, _ in train_parts]).reshape(-1, 3, 32, 32),
                  np.array([label for _, ls in train_parts for label in ls])),
        "test": (test.reshape(-1, 3, 32, 32), np.array([9, 8, 7, 6])),
    }

    c100 = root / "cifar-100-python"
    c100.mkdir(parents=True)
    expected["cifar100"] = {}
    for split, n, labels in (("train", N_TRAIN, [0, 99, 50, 1, 2, 3]), ("test", N_TEST, [42, 7, 99, 0])):
        data = _images(rng, n, (3072,))
        _pickle(c100 / split, {"data": data, "fine_labels": labels, "coarse_labels": [0] * n})
        expected["cifar100"][split] = (data.reshape(-1, 3, 32, 32), np.array(labels))
    _pickle(c100 / "meta", {"fine_label_names": CIFAR100_NAMES, "coarse_label_names": ["x"] * 20})

    return root, expected
