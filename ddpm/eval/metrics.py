"""Sample-quality metrics judged by a small classifier trained on the same dataset (ddpm/eval/judge.py).

- Conditional accuracy: how often the judge sees the class that was asked for.
- Fréchet distance between Gaussians fitted to the judge's 128-d penultimate features of two image sets:
      FD = |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2})
  This is the formula of FID (Heusel et al. 2017) on *classifier* features, not Inception features:
  its values are not comparable with published FIDs. Real-vs-real gives the floor for a given n.
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
