"""Fréchet distance and conditional accuracy, and the evaluation table on a tiny model."""
import math

import pytest
import torch

from ddpm.eval.evaluate import format_table, run, sample_balanced
from ddpm.eval.judge import Judge, train_judge
from ddpm.eval.metrics import conditional_accuracy, frechet_distance


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_noise():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2000, 16, generator=g) @ torch.randn(16, 16, generator=g)
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    distances = [frechet_distance(feats, feats + s * torch.randn(feats.shape, generator=g)) for s in (0.1, 0.5, 1.0, 2.0)]
    assert distances == sorted(distances) and distances[0] > 0


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    """For N(mu_a, diag(va)) vs N(mu_b, diag(vb)): |mu_a - mu_b|^2 + sum (sqrt(va) - sqrt(vb))^2."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(200_000, 3, generator=g) * torch.tensor([1.0, 2.0, 0.5])
    b = torch.randn(200_000, 3, generator=g) * torch.tensor([3.0, 1.0, 0.5]) + torch.tensor([1.0, 0.0, -2.0])
    expected = (1 + 0 + 4) + (1 - 3) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


def test_frechet_distance_rejects_mismatched_features():
    with pytest.raises(ValueError, match="D"):
        frechet_distance(torch.randn(10, 4), torch.randn(10, 5))


class _Oracle(Judge):
    """A judge that reads the class from the mean brightness (images made below encode it)."""
    def forward(self, x):
        level = ((x.mean(dim=(1, 2, 3)) + 1) / 2 * 9).round().long().clamp(0, 9)
        return torch.nn.functional.one_hot(level, 10).float()


def test_conditional_accuracy_per_class():
    labels = torch.arange(10).repeat(3)
    images = (labels.float() / 9 * 2 - 1)[:, None, None, None].expand(-1, 1, 28, 28).clone()
    images[0] = 1.0                                     # one class-0 image now reads as class 9
    overall, per_class = conditional_accuracy(_Oracle(), images, labels)
    assert overall == pytest.approx(29 / 30)
    assert per_class[0] == pytest.approx(2 / 3) and per_class[5] == 1.0


def test_judge_learns_a_separable_toy_problem():
    from ddpm.data import ImageDataset
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(2).repeat(64)
    images = torch.randn(128, 1, 28, 28, generator=g) * 0.3
    images[labels == 1, :, :14] += 1.0                  # class 1 is bright on top
    data = ImageDataset(images, labels, "toy", ["dark", "bright"])
    judge, accuracy = train_judge(data, data, epochs=3, width=4, batch_size=32, progress=False)
    assert accuracy > 0.9


def test_evaluation_rows_and_table(make_ddpm):
    from ddpm.data import ImageDataset
    model = make_ddpm(num_classes=10, T=20)
    judge = Judge(width=4).eval()
    real = ImageDataset(torch.rand(40, 1, 28, 28) * 2 - 1, torch.arange(10).repeat(4), "toy", [str(i) for i in range(10)])
    images, labels = sample_balanced(model, 20, sampler="ddim", steps=2, guidance=2.0, seed=0, chunk=7)
    assert images.shape == (20, 1, 28, 28) and labels.tolist() == sorted(labels.tolist())
    rows = run(model, judge, real, real, [("ddim", 2, 1.0, 20), ("ddim", 4, 2.0, 20)], n_bar=10, progress=False)
    # n_bar rows are added only after a DDIM-50 sweep, and this plan has none
    assert [(r["steps"], r["guidance"]) for r in rows] == [(2, 1.0), (4, 2.0)]
    assert all(0 <= r["accuracy"] <= 1 and math.isfinite(r["fd"]) and r["n"] == 20 for r in rows)
    table = format_table(rows)
    assert table.count("\n") == 3 and "| DDIM | 4 | 2 | 20 |" in table
