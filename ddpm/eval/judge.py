"""Judge classifiers: a small CNN per dataset that tells which class a (generated) image shows.

Its penultimate features (128 numbers per image) also feed the Fréchet distance in ddpm/eval/metrics.py.
Saved beside the DDPM as judge.safetensors + judge_config.json.
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
from ..pretrained import bundled_folder

WEIGHTS, CONFIG = "judge.safetensors", "judge_config.json"


class Judge(nn.Module):
    """conv-conv-pool, conv-conv-pool, linear(128) -> linear(num_classes), with BatchNorm and dropout."""

    def __init__(self, in_channels=1, num_classes=10, image_size=28, width=32, dataset=None):
        super().__init__()
        self.config = dict(in_channels=in_channels, num_classes=num_classes, image_size=image_size,
                           width=width, dataset=dataset)

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

    @torch.inference_mode()
    def classify(self, x, batch_size=500):
        """Predicted labels [B] for images in [-1, 1]."""
        return torch.cat([self(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])

    def save(self, folder):
        os.makedirs(folder, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, os.path.join(folder, WEIGHTS))
        with open(os.path.join(folder, CONFIG), "w") as f:
            json.dump(self.config, f, indent=1)


def load_judge(name_or_folder):
    """The judge beside a bundled model ("mnist", "fashion_mnist") or in a folder; eval mode."""
    folder = bundled_folder(name_or_folder)
    if not os.path.isfile(os.path.join(folder, CONFIG)):
        raise FileNotFoundError(f"no judge in {folder}: expected {CONFIG} and {WEIGHTS}")
    config = read_config(folder, set(inspect.signature(Judge.__init__).parameters) - {"self"}, what="judge", name=CONFIG)
    return load_weights(Judge(**config), os.path.join(folder, WEIGHTS)).eval()


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
