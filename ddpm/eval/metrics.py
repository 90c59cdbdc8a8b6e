"""Sample-quality metrics judged by a small classifier trained on the same dataset (ddpm/eval/judge.py).

- Conditional accuracy: how often the judge sees the class that was asked for.
- Fréchet distance between Gaussians fitted to the judge's 128-d penultimate features of two image sets:
      FD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2})
  This is the formula of FID (Heusel et al. 2017) on *classifier* features, not Inception features:
  its values are not comparable with published FIDs. Real-vs-real gives the floor for a given n.
- Sliced Wasserstein distance between two point clouds (the 2-D playground): the mean over random directions
  of the 1-D Wasserstein-1 distance between the projections (Rabin et al. 2011; Bonneel et al. 2015).
"""
import torch


@torch.inference_mode()
def judge_features(judge, images, batch_size=500):
    """The judge's penultimate features [N, 128] for images [N, C, H, W] in [-1, 1]."""
    return torch.cat([judge.features(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def _sqrtm_psd(m):
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def frechet_distance(feats_a, feats_b):
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] (computed in float64)."""
    if feats_a.dim() != 2 or feats_a.shape[1] != feats_b.shape[1] or min(len(feats_a), len(feats_b)) < 2:
        raise ValueError(f"need two [N >= 2, D] feature sets of equal D, got {tuple(feats_a.shape)} and {tuple(feats_b.shape)}")
    a, b = feats_a.double(), feats_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrtm_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()     # tr (S_a^1/2 S_b S_a^1/2)^1/2
    return float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def conditional_accuracy(judge, images, labels):
    """Fraction of images the judge assigns to their label: (overall, {class: accuracy})."""
    labels = torch.as_tensor(labels)
    correct = (judge.classify(images) == labels).float()
    per_class = {int(c): float(correct[labels == c].mean()) for c in labels.unique()}
    return float(correct.mean()), per_class


def sliced_wasserstein(a, b, *, n_projections=256, generator=None):
    """Sliced Wasserstein-1 distance between point clouds a [N, D] and b [M, D] (N, M >= 1).

    Each random unit direction projects both clouds to 1-D, where W1 is the mean gap between matching
    quantiles; the distance is the mean over directions. 0 for identical clouds; in the data's units.
    """
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 1:
        raise ValueError(f"need two [N, D] point clouds of equal D, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.double(), b.double()
    directions = torch.randn(a.shape[1], n_projections, generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=0, keepdim=True)
    qs = torch.linspace(0, 1, max(len(a), len(b)), dtype=torch.float64)
    pa = torch.quantile((a @ directions), qs, dim=0)                    # [Q, P] matching quantiles
    pb = torch.quantile((b @ directions), qs, dim=0)
    return float((pa - pb).abs().mean())
