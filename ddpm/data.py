"""Datasets through torchvision's own classes, scaled to [-1, 1] and held as tensors.

The root folder comes from the `root` argument, else the DDPM_DATA environment variable, else ./data;
it has torchvision's layout (e.g. <root>/MNIST/raw/train-images-idx3-ubyte, <root>/cifar-10-batches-py/).
"""
import os
from dataclasses import dataclass

import numpy as np
import torch
import torchvision
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
from torchvision.datasets.utils import calculate_md5


@dataclass(frozen=True)
class DatasetInfo:
    cls: type                 # torchvision dataset class
    image_shape: tuple        # (C, H, W)
    expected_files: tuple     # paths below the root that torchvision reads
    source: str               # where torchvision downloads it from, for the error message


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DATASETS = {
    "mnist": DatasetInfo(torchvision.datasets.MNIST, (1, 28, 28),
                         tuple(f"MNIST/raw/{f}" for f in _MNIST_FILES), "torchvision.datasets.MNIST mirrors"),
    "fashion_mnist": DatasetInfo(torchvision.datasets.FashionMNIST, (1, 28, 28),
                                 tuple(f"FashionMNIST/raw/{f}" for f in _MNIST_FILES), "Zalando's FashionMNIST bucket"),
    "cifar10": DatasetInfo(torchvision.datasets.CIFAR10, (3, 32, 32),
                           tuple(f"cifar-10-batches-py/{f}" for f in
                                 [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]),
                           "https://www.cs.toronto.edu/~kriz/cifar.html"),
    "cifar100": DatasetInfo(torchvision.datasets.CIFAR100, (3, 32, 32),
                            tuple(f"cifar-100-python/{f}" for f in ("train", "test", "meta")),
                            "https://www.cs.toronto.edu/~kriz/cifar.html"),
}


class DatasetNotFoundError(FileNotFoundError):
    pass


class DatasetCorruptedError(ValueError):
    """The dataset's files are all there, but some do not have the checksum torchvision expects."""


class ImageDataset(TensorDataset):
    """(image in [-1, 1] of shape [C, H, W], label) pairs, with the dataset's name and class names."""

    def __init__(self, images, labels, name, classes):
        super().__init__(images, labels)
        self.images, self.labels, self.name, self.classes = images, labels, name, list(classes)


def data_root(root=None):
    return str(root or os.environ.get("DDPM_DATA", "./data"))


def dataset_info(name):
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def to_unit_range(images_uint8):
    """uint8 pixels [N, H, W] or [N, H, W, C] (array or tensor) -> float [N, C, H, W] in [-1, 1]: x / 127.5 - 1."""
    x = torch.as_tensor(np.asarray(images_uint8))
    if x.dtype != torch.uint8 or x.dim() not in (3, 4):
        raise ValueError(f"to_unit_range takes uint8 images [N, H, W] or [N, H, W, C], got {x.dtype} {tuple(x.shape)}")
    x = x[:, None] if x.dim() == 3 else x.permute(0, 3, 1, 2)             # [N, C, H, W]
    return x.float().div(127.5).sub(1.0).contiguous()


def to_uint8(x):
    """The inverse of to_unit_range: images [N, C, H, W] in [-1, 1] -> uint8 array [N, H, W, C] (clamped, rounded)."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def _corrupted(info, root):
    """(file, md5 found, md5 expected) for each of a CIFAR folder's files whose checksum is not torchvision's."""
    cls = info.cls
    if not hasattr(cls, "train_list"):                  # MNIST-style raw files carry no checksums
        return []
    entries = cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]]
    bad = []
    for filename, md5 in entries:
        path = os.path.join(root, cls.base_folder, filename)
        if os.path.isfile(path) and (found := calculate_md5(path)) != md5:
            bad.append((os.path.join(cls.base_folder, filename), found, md5))
    return bad


def load_dataset(name, root=None, train=True, download=True):
    """Load a dataset's train or test split as an ImageDataset, downloading it if allowed and missing.

    Raises DatasetNotFoundError naming the missing files, or DatasetCorruptedError naming the files whose
    checksum is wrong (truncated or altered: delete them and download again)."""
    info, root = dataset_info(name), data_root(root)
    try:
        ds = info.cls(root=root, train=train, download=download)
    except (RuntimeError, OSError) as err:       # torchvision: "Dataset not found or corrupted", or a failed download
        missing = [f for f in info.expected_files if not os.path.isfile(os.path.join(root, f))]
        bad = [] if missing else _corrupted(info, root)
        if bad:
            lines = "\n  ".join(f"{f}: md5 {found}, expected {md5}" for f, found, md5 in bad)
            raise DatasetCorruptedError(
                f"{name} under {os.path.abspath(root)} is corrupted: every file is there, but these do not have the "
                f"checksum torchvision expects (truncated or altered):\n  {lines}\nDelete them (or the folder) and "
                f"download again from {info.source}.") from err
        files = "\n  ".join(os.path.join(root, f) for f in (missing or info.expected_files))
        # torchvision's own "not found or corrupted" says neither which nor what: we did; a download error says why
        reason = "" if isinstance(err, RuntimeError) else f" ({err})"
        raise DatasetNotFoundError(
            f"{name} not found under {os.path.abspath(root)} and could not be downloaded{reason}.\n"
            f"Missing:\n  {files}\nGet it with network access (download=True fetches it from "
            f"{info.source}), or point --data / DDPM_DATA at a folder with that layout.") from err
    return ImageDataset(to_unit_range(ds.data), torch.as_tensor(ds.targets, dtype=torch.long), name, ds.classes)


class EpochSampler(DistributedSampler):
    """The order of one epoch, the same on one process and on N: epoch e is torch's permutation seeded with
    seed + e, cut into N interleaved shares (rank r takes positions r, r + N, ...; PyTorch's DistributedSampler).
    So N processes with batch B / N see, at every step, the same images as one process with batch B.

    start: batches of this rank already taken (a resumed run): the epoch it falls in and the place in it.
    flip: also yield a mirror decision per image, drawn per epoch for the whole dataset (so it does not
    depend on N either)."""

    def __init__(self, dataset, batch_size, *, rank=0, world_size=1, shuffle=True, seed=0, start=0, flip=False):
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
        per_epoch = max(1, self.num_samples // batch_size)
        self.epoch, self.skip = divmod(start, per_epoch)
        self.skip *= batch_size
        self.flip = flip

    def __iter__(self):
        indices = list(super().__iter__())[self.skip:]
        self.skip = 0                                   # only the epoch the run resumes in is entered part-way
        if not self.flip:
            return iter(indices)
        mirror = torch.rand(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + 1 + 7919 * self.epoch)) < 0.5
        return iter((i, bool(mirror[i])) for i in indices)


class _Mirrored(torch.utils.data.Dataset):
    """Items (index, mirror) -> (image, mirrored left-right when asked, label)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, mirror = key
        x, y = self.dataset[index]
        return (x.flip(-1) if mirror else x), y                              # [C, H, W]: W reversed


def make_loader(dataset, batch_size=128, *, classes=None, shuffle=True, seed=0, drop_last=True, flip=False,
                rank=0, world_size=1, start=0):
    """A DataLoader over `dataset`, optionally restricted to the given class indices.

    flip: mirror each image left-right with probability 1/2 (the augmentation of Ho et al.'s CIFAR-10 runs;
    not for digits, whose mirror images are not digits).
    rank, world_size: this process's share of every epoch in a run on world_size processes (torchrun);
    batch_size is then the batch of this process. start: batches already taken by this process (resume).
    See EpochSampler."""
    if classes is not None:
        keep = torch.isin(dataset.labels, torch.as_tensor(list(classes)))
        dataset = ImageDataset(dataset.images[keep], dataset.labels[keep], dataset.name, dataset.classes)
    if len(dataset) == 0:
        raise ValueError(f"no images left for classes={classes}")
    batch_size = min(batch_size, -(-len(dataset) // world_size))
    sampler = EpochSampler(dataset, batch_size, rank=rank, world_size=world_size, shuffle=shuffle, seed=seed,
                           start=start, flip=flip)
    return DataLoader(_Mirrored(dataset) if flip else dataset, batch_size=batch_size, sampler=sampler,
                      drop_last=drop_last)
