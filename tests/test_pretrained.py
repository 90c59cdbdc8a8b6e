"""The bundled models, their judges and example images: they load, match their cards, and draw the asked class."""
import os
import re

import pytest
import torch

from ddpm import load_pretrained, sample
from ddpm.data import load_dataset
from ddpm.eval.judge import load_judge
from ddpm.eval.metrics import conditional_accuracy
from ddpm.pretrained import BUNDLED, BUNDLED_DIR, load_examples

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets")


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_loads_with_documented_config(name):
    model = load_pretrained(name)
    assert (model.T, model.schedule.name, model.num_classes, model.sample_shape) == (1000, "linear", 10, (1, 28, 28))
    assert model.dataset == name and len(model.class_names) == 10
    card = open(os.path.join(BUNDLED_DIR, name, "README.md")).read()
    stated = re.search(r"^\| parameters \| ([\d,]+) \|$", card, re.M)
    assert stated and int(stated.group(1).replace(",", "")) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name, min_correct", [("mnist", 18), ("fashion_mnist", 15)])
def test_bundled_model_draws_the_asked_class(name, min_correct):
    """Smoke test, not the evaluation: 2 images per class, DDIM 10 steps, guidance 3, fixed seed."""
    model, judge = load_pretrained(name), load_judge(name)
    classes = list(range(10))
    x = sample(model, 2, classes, sampler="ddim", steps=10, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert x.shape == (20, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    asked = torch.tensor(classes).repeat_interleave(2)
    assert int((judge.classify(x) == asked).sum()) >= min_correct


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_examples_are_real_labelled_images(name):
    images, labels = load_examples(name)
    assert images.dtype == torch.uint8 and images.shape[1:] == (28, 28) and len(images) == len(labels)
    counts = torch.bincount(labels, minlength=10)
    assert counts.min() >= 75 and counts.max() <= 100                      # about 100 test images per class
    x = images[:, None].float() / 127.5 - 1
    accuracy, _ = conditional_accuracy(load_judge(name), x, labels)
    assert accuracy > 0.9                                                  # the judge recognises them


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="needs ../shared/datasets (the MNIST subset and FashionMNIST)")
@pytest.mark.parametrize("name, bar", [("mnist", 0.985), ("fashion_mnist", 0.91)])
def test_judge_reaches_its_accuracy_bar_on_the_test_split(name, bar):
    test = load_dataset(name, SHARED, train=False, download=False)
    judge = load_judge(name)
    accuracy, per_class = conditional_accuracy(judge, test.images, test.labels)
    assert accuracy >= bar
    # conditional accuracy of real labelled images is the judge's plain accuracy
    assert accuracy == pytest.approx(float((judge.classify(test.images) == test.labels).float().mean()))
    assert len(per_class) == 10
