"""Datasets load through torchvision's own classes from files in its on-disk formats (see conftest.fake_data)."""
import os

import pytest
import torch
import torchvision

from ddpm import DATASETS, load_dataset, make_loader
from ddpm.data import DatasetCorruptedError, DatasetNotFoundError

from conftest import CIFAR10_NAMES, CIFAR100_NAMES

SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}
CLASS_NAMES = {"mnist": torchvision.datasets.MNIST.classes, "fashion_mnist": torchvision.datasets.FashionMNIST.classes,
               "cifar10": CIFAR10_NAMES, "cifar100": CIFAR100_NAMES}


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_dataset(fake_data, name, split):
    root, expected = fake_data
    images_u8, labels = expected[name][split]
    ds = load_dataset(name, root, train=split == "train", download=False)
    assert ds.images.shape == (len(labels), *SHAPES[name])
    assert ds.images.dtype == torch.float32
    assert ds.images.min() >= -1 and ds.images.max() <= 1
    # pixel for pixel, in [C, H, W] order: 0 -> -1, 255 -> 1
    torch.testing.assert_close(ds.images, torch.as_tensor(images_u8).float() / 127.5 - 1)
    assert ds.labels.tolist() == labels.tolist()
    assert ds.labels.dtype == torch.long
    assert ds.classes == list(CLASS_NAMES[name])
    assert ds.name == name
    x, y = ds[0]
    assert x.shape == SHAPES[name] and int(y) == labels[0]


def test_shapes_agree_with_registry():
    assert {name: info.image_shape for name, info in DATASETS.items()} == SHAPES


def test_data_env_var_is_honoured(fake_data, monkeypatch):
    root, expected = fake_data
    monkeypatch.setenv("DDPM_DATA", str(root))
    ds = load_dataset("fashion_mnist", train=False, download=False)
    assert ds.labels.tolist() == expected["fashion_mnist"]["test"][1].tolist()


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_missing_dataset_names_files(tmp_path, name):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(name, tmp_path, download=False)
    message = str(err.value)
    assert str(tmp_path) in message
    for f in DATASETS[name].expected_files:
        assert os.path.join(str(tmp_path), f) in message
    assert isinstance(err.value, FileNotFoundError)


def test_unknown_dataset_names_the_value(tmp_path):
    with pytest.raises(ValueError, match="'svhn'"):
        load_dataset("svhn", tmp_path, download=False)


def test_make_loader_filters_classes(fake_data):
    root, _ = fake_data
    ds = load_dataset("cifar10", root, train=True, download=False)        # labels 2, 3, ..., 11 mod 10
    loader = make_loader(ds, batch_size=64, classes=[0, 3], drop_last=False)
    labels = torch.cat([y for _, y in loader])
    assert sorted(labels.tolist()) == [0, 3]
    images = torch.cat([x for x, _ in loader])
    assert images.shape == (2, 3, 32, 32)


def test_make_loader_batches_and_is_seeded(fake_data):
    root, _ = fake_data
    ds = load_dataset("mnist", root, train=True, download=False)            # 6 images
    order = lambda seed: torch.cat([y for _, y in make_loader(ds, batch_size=4, seed=seed)]).tolist()
    batches = list(make_loader(ds, batch_size=4))
    assert [x.shape[0] for x, _ in batches] == [4]                           # drop_last
    assert order(0) == order(0)


def test_make_loader_rejects_empty_selection(fake_data):
    root, _ = fake_data
    ds = load_dataset("mnist", root, train=False, download=False)            # labels 0..3
    with pytest.raises(ValueError, match=r"\[7\]"):
        make_loader(ds, classes=[7])


@pytest.mark.parametrize("name, folder, victim", [("cifar10", "cifar-10-batches-py", "data_batch_3"),
                                                  ("cifar100", "cifar-100-python", "train")])
def test_corrupted_cifar_files_are_told_apart_from_missing_ones(fake_data, monkeypatch, name, folder, victim):
    root, _ = fake_data
    monkeypatch.undo()                 # torchvision's real md5 check: the test's hand-written files cannot pass it
    corrupted = f"(?s)is corrupted: every file is there.*{folder}/{victim}: md5 [0-9a-f]+, expected"
    with pytest.raises(DatasetCorruptedError, match=corrupted):
        load_dataset(name, root, train=True, download=False)
    os.remove(os.path.join(root, folder, victim))
    with pytest.raises(DatasetNotFoundError, match=f"(?s)Missing:\\n  .*{folder}/{victim}\\nGet it") as err:
        load_dataset(name, root, train=True, download=False)
    assert "is corrupted" not in str(err.value) and "Dataset not found or corrupted" not in str(err.value)


def test_flip_mirrors_about_half_the_images_left_right(fake_data):
    root, _ = fake_data
    ds = load_dataset("cifar10", root, train=True, download=False)
    plain = next(iter(make_loader(ds, 10, shuffle=False)))[0]
    flipped = next(iter(make_loader(ds, 10, shuffle=False, flip=True)))[0]
    mirrored = [bool(torch.equal(f, p.flip(-1))) and not torch.equal(f, p) for f, p in zip(flipped, plain, strict=True)]
    kept = [bool(torch.equal(f, p)) for f, p in zip(flipped, plain, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True)) and 2 <= sum(mirrored) <= 8
    again = next(iter(make_loader(ds, 10, shuffle=False, flip=True)))[0]
    assert torch.equal(again, flipped)                                   # seeded
