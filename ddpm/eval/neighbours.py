"""Nearest training neighbours: is the model copying its training set?

A sample that lies much closer to one training image than real images the model never saw (held-out test
images) lie to the training set is a copy, not a new image: the test of memorisation in Carlini et al. (2023),
"Extracting Training Data from Diffusion Models", and Somepalli et al. (2023), "Diffusion Art or Digital Forgery?".
Distances are measured in two spaces:

    pixels    L2 over all pixels, in the [-1, 1] units the model works in (28x28: at most 2 * 28 = 56)
    features  L2 between the judge classifier's 128 penultimate features (ddpm/eval/judge.py): "looks the same
              to a classifier", blind to a shift by a pixel or a thicker stroke

An index holds the training images searched (uint8), their labels and judge features (float16), and says which
set they are: the whole training set, or a seeded stratified subset (the bundled neighbours.safetensors, a few MB).
"""
import hashlib
import os

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..checkpoint import CheckpointError
from ..data import load_dataset, to_uint8
from .metrics import judge_features

INDEX = "neighbours.safetensors"
SPACES = ("features", "pixels")
CHUNK = 8192                  # index rows per distance block: [B, CHUNK] floats at a time, whatever the set's size
_TENSORS = ("images", "labels", "features")
_METADATA = ("dataset", "split", "n", "n_total", "per_class", "seed", "judge")


def judge_fingerprint(judge):
    """16 hex digits of SHA-256 over the judge's weights: an index's features are comparable with this judge's only."""
    h = hashlib.sha256()
    for name, value in sorted(judge.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def stratified(labels, per_class, seed=0):
    """Positions of per_class images of each class present in labels [N], drawn with a seeded permutation, sorted."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    picks = []
    for c in labels.unique().tolist():
        mine = order[labels[order] == c]
        if len(mine) < per_class:
            raise ValueError(f"per_class={per_class}, but class {c} has only {len(mine)} images in this set")
        picks.append(mine[:per_class])
    return torch.cat(picks).sort().values


def build_index(train_set, judge, *, per_class=None, seed=0, callback=None):
    """An index of a training set (an ImageDataset): all of it (per_class=None) or per_class images of each class.

    callback(), if given, is called between batches of judge features (a long build can share the cores)."""
    n_total = len(train_set)
    keep = torch.arange(n_total) if per_class is None else stratified(train_set.labels, per_class, seed)
    images, feats = [], []
    for start in range(0, len(keep), 500):                 # in batches: a 60,000-image set is never copied whole
        x = train_set.images[keep[start:start + 500]]                                   # [b, C, H, W] in [-1, 1]
        feats.append(judge_features(judge, x).to(torch.float16))
        images.append(torch.from_numpy(to_uint8(x)).permute(0, 3, 1, 2))               # [b, C, H, W] uint8
        if callback is not None:
            callback()
    images = torch.cat(images)
    return dict(images=images[:, 0].contiguous() if images.shape[1] == 1 else images.contiguous(),
                labels=train_set.labels[keep].long(), features=torch.cat(feats),
                dataset=train_set.name, split="train", n=len(keep), n_total=n_total, per_class=per_class, seed=seed,
                judge=judge_fingerprint(judge))


def index_from_data(dataset_name, root, judge, *, callback=None):
    """The index of a whole training set read from `root` (torchvision's layout); never downloads.

    Raises ddpm.data.DatasetNotFoundError when the files are not there."""
    train_set = load_dataset(dataset_name, root, train=True, download=False)
    return build_index(train_set, judge, callback=callback)


def save_index(folder, index):
    """Write <folder>/neighbours.safetensors: the tensors, and the metadata as strings in the header."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, INDEX)
    metadata = {key: "all" if index[key] is None else str(index[key]) for key in _METADATA}
    save_file({key: index[key].contiguous() for key in _TENSORS}, path, metadata=metadata)
    return path


def load_index(folder):
    """The index in <folder>/neighbours.safetensors, or None when there is none; CheckpointError for a bad file."""
    path = os.path.join(folder, INDEX)
    if not os.path.isfile(path):
        return None
    try:
        with safe_open(path, "pt") as f:
            metadata, tensors = f.metadata() or {}, {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}); write it again with "
                              "`python -m ddpm neighbours`") from err
    missing = [key for key in (*_TENSORS, *_METADATA) if key not in tensors and key not in metadata]
    if missing:
        raise CheckpointError(f"{path} is not a neighbours index: it lacks {missing}; an index holds the tensors "
                              f"{list(_TENSORS)} and the metadata {list(_METADATA)}")
    images, labels, features = (tensors[key] for key in _TENSORS)
    n = len(images)
    if (images.dtype != torch.uint8 or images.dim() not in (3, 4) or labels.dtype != torch.int64
            or labels.shape != (n,) or features.dtype != torch.float16 or features.dim() != 2 or len(features) != n):
        raise CheckpointError(f"{path} is not a neighbours index: expected images uint8 [N, H, W] or [N, C, H, W], "
                              f"labels int64 [N], features float16 [N, D]; got {images.dtype} {tuple(images.shape)}, "
                              f"{labels.dtype} {tuple(labels.shape)}, {features.dtype} {tuple(features.shape)}")
    try:
        numbers = {key: int(metadata[key]) for key in ("n", "n_total", "seed")}
        per_class = None if metadata["per_class"] == "all" else int(metadata["per_class"])
    except ValueError as err:
        raise CheckpointError(f"{path}: the metadata n, n_total, seed and per_class must be whole numbers "
                              f"(per_class may be 'all'), got {metadata}") from err
    if numbers["n"] != n:
        raise CheckpointError(f"{path} says it holds n={numbers['n']} images, but holds {n}")
    return dict(tensors, dataset=metadata["dataset"], split=metadata["split"], per_class=per_class,
                judge=metadata["judge"], **numbers)


def index_images(index, positions):
    """The index's images at `positions` as floats [n, C, H, W] in [-1, 1]."""
    x = index["images"][positions]
    x = x[:, None] if x.dim() == 3 else x
    return x.float().div(127.5).sub(1.0)                                      # to_unit_range's x / 127.5 - 1


def _query_vectors(index, images, judge, space):
    """Images [B, C, H, W] in [-1, 1] as vectors [B, D] of `space`, at the index's precision."""
    images = images.detach().float().cpu().clamp(-1, 1)            # what the screen shows (to_uint8 clamps too)
    if space == "pixels":
        shape = tuple(index_images(index, slice(0, 1)).shape[1:])
        if tuple(images.shape[1:]) != shape:
            raise ValueError(f"images of shape {tuple(images.shape[1:])} cannot be compared with the index's {shape}")
        return images.flatten(1)
    if judge is None:
        raise ValueError("space='features' needs the judge whose features the index holds; got judge=None")
    if judge_fingerprint(judge) != index["judge"]:
        raise ValueError(f"the index's features come from judge {index['judge']}, this judge is "
                         f"{judge_fingerprint(judge)}: build the index again with this judge "
                         "(python -m ddpm neighbours)")
    # rounded to float16 as the index is, so an image of the index finds itself at distance 0
    return judge_features(judge, images).to(torch.float16).float()


def _index_vectors(index, rows, space):
    """The index's images at `rows` as float32 vectors [n, D] of `space`."""
    return index["features"][rows].float() if space == "features" else index_images(index, rows).flatten(1)


def nearest(index, images, judge, *, k=3, space="features", chunk=CHUNK):
    """The k nearest index images of each of images [B, C, H, W] in [-1, 1]: (positions [B, k], distances [B, k]),
    nearest first. space: "features" (L2 of judge features, float32) or "pixels" (L2 over all pixels in [-1, 1]).

    The distance matrix is computed `chunk` index rows at a time, keeping the k best so far, so a 60,000-image set
    needs [B, chunk] floats, not [B, 60,000]. judge may be None for space="pixels"."""
    if space not in SPACES:
        raise ValueError(f"space {space!r} is unknown; choose one of {list(SPACES)}")
    n = len(index["labels"])
    if not 1 <= k <= n:
        raise ValueError(f"k = {k} must be in [1, {n}] (the images in the index)")
    q = _query_vectors(index, images, judge, space)                                        # [B, D]
    best_d2, best_i = q.new_empty(len(q), 0), torch.empty(len(q), 0, dtype=torch.long)
    for start in range(0, n, chunk):
        keys = _index_vectors(index, slice(start, start + chunk), space)                   # [c, D]
        d2 = (q * q).sum(1, keepdim=True) - 2 * q @ keys.T + (keys * keys).sum(1)         # |a-b|^2 = a.a - 2a.b + b.b
        d2, i = torch.cat([best_d2, d2], 1), torch.cat([best_i, start + torch.arange(len(keys)).expand(len(q), -1)], 1)
        best_d2, pick = d2.topk(min(k, d2.shape[1]), dim=1, largest=False)
        best_i = i.gather(1, pick)
    # the expansion ranks well but loses about 1e-2 to rounding near 0: the distances of the k found, exactly
    found = _index_vectors(index, best_i.flatten(), space).view(*best_i.shape, -1)          # [B, k, D]
    dist = (found - q[:, None]).norm(dim=-1)
    dist, order = dist.sort(dim=1, stable=True)
    return best_i.gather(1, order), dist


def held_out_distances(index, held_out, judge, *, space):
    """The distance of each held-out real image [N, C, H, W] to its nearest index image [N]: what "not a copy"
    looks like, for the same index."""
    return nearest(index, held_out, judge, k=1, space=space)[1][:, 0]


def typical_distance(index, held_out, judge, *, space):
    """The median nearest-neighbour distance of held-out real images to the index: the reference a sample's
    distance is read against (the bundled examples are real *test* images, never trained on)."""
    return float(held_out_distances(index, held_out, judge, space=space).quantile(0.5))
