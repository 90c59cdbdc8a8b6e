"""Judge classifiers: a small CNN per dataset that tells which class a (generated) image shows, or that it shows
none of them.

Its penultimate features (128 numbers per image) also feed the Fréchet distance in ddpm/eval/metrics.py.
Saved beside the DDPM as judge.safetensors + judge_config.json.

"None of these": a classifier always names one of its classes, so a drawn triangle would count as a zero. The judge
remembers real test images (examples.safetensors beside it, ~100 per class); an image whose features lie farther from
every one of them than real test images do gets the verdict NONE instead. The threshold is calibrated on those images,
each against the others: NONE_RATE of them would get NONE.
"""
import inspect
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint import load_weights, read_config
from ..data import to_unit_range
from ..pretrained import EXAMPLES, bundled_folder, load_examples

WEIGHTS, CONFIG = "judge.safetensors", "judge_config.json"
NONE = -1            # the verdict "none of these": an image unlike every real example of the judge's classes
NONE_RATE = 0.05     # the share of real test images that get NONE at the calibrated threshold (a false alarm rate)


class Judge(nn.Module):
    """conv-conv-pool, conv-conv-pool, linear(128) -> linear(num_classes), with BatchNorm and dropout."""

    def __init__(self, in_channels=1, num_classes=10, image_size=28, width=32, dataset=None):
        super().__init__()
        self.config = dict(in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                           width=width, dataset=dataset)
        self.reference = None                 # real images for NONE: data, not weights, so neither saved nor hashed
        self._reference_features, self._none_beyond = None, None

        def conv(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
        w = width
        self.body = nn.Sequential(*conv(in_channels, w), *conv(w, w), nn.MaxPool2d(2),
                                  *conv(w, 2 * w), *conv(2 * w, 2 * w), nn.MaxPool2d(2), nn.Flatten(),
                                  nn.Dropout(0.3), nn.Linear(2 * w * (image_size // 4) ** 2, 128), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(128, num_classes))

    def features(self, x):
        """Penultimate activations [B, 128] of images [B, C, H, W] in [-1, 1]."""
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))

    def remember(self, real):
        """Keep real images [N, C, H, W] in [-1, 1] (or uint8 [N, H, W]) as the reference of the NONE verdict."""
        self.reference = to_unit_range(real) if real.dtype == torch.uint8 else real
        self._reference_features, self._none_beyond = None, None

    @torch.inference_mode()
    def nearest_real(self, x, batch_size=500):
        """Distance [B] in feature space from each image in [-1, 1] to its nearest remembered real image."""
        return _distances(self._features(x, batch_size), self._reference()).min(1).values

    @property
    def none_beyond(self):
        """The distance to the nearest real image beyond which the verdict is NONE: the (1 - NONE_RATE) quantile of
        that distance over the remembered images, each measured against the others (leave one out)."""
        if self._none_beyond is None:
            reference = self._reference()
            d = _distances(reference, reference).fill_diagonal_(float("inf"))        # [N, N], itself left out
            self._none_beyond = float(d.min(1).values.quantile(1.0 - NONE_RATE))
        return self._none_beyond

    def _reference(self):
        if self.reference is None:
            raise ValueError("this judge remembers no real images, so it cannot say 'none of these': call "
                             f"remember(images) (load_judge does, from the {EXAMPLES} beside the judge)")
        if self._reference_features is None:           # once, on first use: about a second on a CPU
            self._reference_features = self._features(self.reference.to(self.head[-1].weight.device), 500)
        return self._reference_features

    @torch.inference_mode()
    def _features(self, x, batch_size):
        return torch.cat([self.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])

    @torch.inference_mode()
    def classify(self, x, batch_size=500, *, none_of_these=False):
        """Predicted labels [B] for images in [-1, 1]; with none_of_these, NONE for each image farther from every
        remembered real image than real images are (`none_beyond`), so that it counts as wrong for every class."""
        labels = torch.cat([self(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
        if not none_of_these:
            return labels
        return torch.where(self.nearest_real(x, batch_size) > self.none_beyond, NONE, labels)

    def save(self, folder):
        os.makedirs(folder, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, os.path.join(folder, WEIGHTS))
        with open(os.path.join(folder, CONFIG), "w") as f:
            json.dump(self.config, f, indent=1)


def _distances(a, b):
    """Euclidean distances [N, M] between feature rows, computed directly: the matrix-product shortcut of cdist
    leaves an image a small distance from itself, which can cross a tight threshold."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def load_judge(name_or_folder):
    """The judge beside a bundled model ("mnist", "fashion_mnist") or in a folder; eval mode. It remembers the real
    examples beside it (examples.safetensors), if any, for its "none of these" verdict."""
    folder = bundled_folder(name_or_folder)
    if not os.path.isfile(os.path.join(folder, CONFIG)):
        raise FileNotFoundError(f"no judge in {folder}: expected {CONFIG} and {WEIGHTS}")
    config = read_config(folder, set(inspect.signature(Judge.__init__).parameters) - {"self"}, what="judge", name=CONFIG)
    judge = load_weights(Judge(**config), os.path.join(folder, WEIGHTS)).eval()
    if os.path.isfile(os.path.join(folder, EXAMPLES)):
        judge.remember(load_examples(folder)[0])
    return judge


def _shift(x, max_shift, generator):
    """Random translation by up to max_shift pixels (pad with background -1, then crop)."""
    B, _, H, W = x.shape
    padded = F.pad(x, [max_shift] * 4, value=-1.0)
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator).tolist()
    return padded[:, :, dy:dy + H, dx:dx + W]


def train_judge(train_set, test_set, *, epochs=10, width=32, batch_size=128, lr=2e-3, max_shift=2, seed=0, progress=True):
    """Train a Judge with Adam, one-cycle learning rate and random shifts; returns (judge, test accuracy)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    C, H, _ = train_set.images.shape[1:]
    judge = Judge(C, len(train_set.classes), H, width, dataset=train_set.name)
    optim = torch.optim.Adam(judge.parameters(), lr=lr, weight_decay=1e-4)
    n_batches = len(train_set) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, lr, total_steps=epochs * n_batches)
    for epoch in range(epochs):
        judge.train()
        perm = torch.randperm(len(train_set), generator=g)
        bar = tqdm(range(n_batches), disable=not progress, desc=f"judge epoch {epoch + 1}/{epochs}")
        for b in bar:
            idx = perm[b * batch_size:(b + 1) * batch_size]
            x = _shift(train_set.images[idx], max_shift, g)          # shift per batch: cheap augmentation
            loss = F.cross_entropy(judge(x), train_set.labels[idx])
            optim.zero_grad()
            loss.backward()
            optim.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    judge.eval()
    accuracy = (judge.classify(test_set.images) == test_set.labels).float().mean().item()
    return judge, accuracy
