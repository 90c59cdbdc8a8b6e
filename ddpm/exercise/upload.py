"""Reading a student's uploaded outputs safely: .npz (NumPy, never unpickled) or .safetensors, at most 5 MB.

No code of the upload ever runs: np.load(allow_pickle=False) refuses object arrays, a pickle is recognised by its
first bytes and refused, and a zip's members are counted and sized before anything is unpacked (a small .npz can
unpack to gigabytes). Every refusal names what was wrong, as a plain-text UploadError.
"""
import io
import os
import struct
import zipfile

import numpy as np
from safetensors.numpy import load as load_safetensors

MAX_BYTES = 5 * 1024 * 1024
MAX_ARRAYS = 16
MAX_UNPACKED = 32 * 1024 * 1024

# the arrays each item's upload holds: name -> shape (False: optional)
EXPECTED = {
    "sample_xt": {"x_t_1000": ((16, 1, 8, 8), True), "x_t_100": ((16, 1, 8, 8), True)},
    "sample": {"x_prev_1000": ((16, 1, 8, 8), True), "x_prev_100": ((16, 1, 8, 8), True), "y": ((6,), False)},
}


class UploadError(ValueError):
    """An upload that is refused; the message says why."""


def _size_text(n):
    return f"{n / 2 ** 20:.1f} MB" if n >= 2 ** 20 else f"{n} bytes"


def read_bytes(uploaded):
    """The upload's bytes, from bytes or a file path; a file over MAX_BYTES is refused before it is read."""
    if isinstance(uploaded, (bytes, bytearray, memoryview)):
        raw = bytes(uploaded)
    elif isinstance(uploaded, (str, os.PathLike)):
        if not os.path.isfile(uploaded):
            raise UploadError(f"no file at {os.fspath(uploaded)!r}")
        size = os.path.getsize(uploaded)
        if size > MAX_BYTES:
            raise UploadError(f"the file is {_size_text(size)}; uploads are limited to 5 MB")
        with open(uploaded, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    else:
        raise UploadError(f"expected the file's bytes or its path, got {type(uploaded).__name__}")
    if len(raw) > MAX_BYTES:
        raise UploadError(f"the file is {_size_text(len(raw))}; uploads are limited to 5 MB")
    return raw


def _kind(raw):
    if raw[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "npz"
    if raw[:6] == b"\x93NUMPY":
        return "npy"
    if raw[:1] == b"\x80" and raw[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if len(raw) >= 9 and raw[8:9] == b"{" and struct.unpack("<Q", raw[:8])[0] <= len(raw) - 8:
        return "safetensors"
    return None


def _read_npz(raw):
    try:
        members = zipfile.ZipFile(io.BytesIO(raw)).infolist()
    except zipfile.BadZipFile as err:
        raise UploadError(f"the .npz is not a readable zip file ({err})") from err
    if len(members) > MAX_ARRAYS:
        raise UploadError(f"the .npz holds {len(members)} arrays; at most {MAX_ARRAYS} are read")
    unpacked = sum(m.file_size for m in members)
    if unpacked > MAX_UNPACKED:
        raise UploadError(f"the .npz unpacks to {_size_text(unpacked)}; at most {_size_text(MAX_UNPACKED)} is unpacked")
    arrays = {}
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        for key in npz.files:
            try:
                arrays[key] = npz[key]
            except ValueError as err:            # numpy: "Object arrays cannot be loaded when allow_pickle=False"
                raise UploadError(f"array '{key}' holds Python objects (dtype=object), which would need unpickling: "
                                  "refused; store numbers only (e.g. np.asarray(x, dtype=np.float32))") from err
            except Exception as err:
                raise UploadError(f"array '{key}' of the .npz cannot be read ({err})") from err
    return arrays


def read_upload(uploaded):
    """{name: array} from an uploaded .npz or .safetensors (bytes or a path); anything else is refused by name."""
    raw = read_bytes(uploaded)
    kind = _kind(raw)
    if kind == "pickle":
        raise UploadError("the file is a Python pickle (torch.save or pickle.dump): pickles can run code when "
                          "loaded, so they are refused; save with np.savez or safetensors")
    if kind == "npy":
        raise UploadError("the file is a single .npy array; upload an .npz (np.savez(path, name=array, ...)) that "
                          "names each array")
    if kind == "npz":
        return _read_npz(raw)
    if kind == "safetensors":
        try:
            return dict(load_safetensors(raw))
        except Exception as err:
            raise UploadError(f"the .safetensors file cannot be read ({err})") from err
    raise UploadError(f"the file is neither .npz nor .safetensors (it starts with {raw[:8]!r})")


def validate(item, arrays):
    """The upload's arrays as float64, after checking their names, types, shapes and values against EXPECTED."""
    expected = EXPECTED[item]
    missing = [k for k, (_, required) in expected.items() if required and k not in arrays]
    extra = [k for k in arrays if k not in expected]
    if missing or extra:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unexpected {extra}"] if extra else [])
        raise UploadError(f"wrong arrays for {item}: {', '.join(parts)}; expected {list(expected)}"
                          + (" (y optional)" if item == "sample" else ""))
    out = {}
    for key, array in arrays.items():
        shape = expected[key][0]
        if array.dtype.kind not in "fiu":
            raise UploadError(f"array '{key}' has dtype {array.dtype}; numbers (float or int) are expected")
        if array.shape != shape:
            raise UploadError(f"array '{key}' has shape {array.shape}; expected {shape}")
        array = array.astype(np.float64)
        bad = ~np.isfinite(array)
        if bad.any():
            what = "NaN" if np.isnan(array).any() else "inf"
            raise UploadError(f"array '{key}' holds {int(bad.sum())} {what} values; every value must be a finite number")
        out[key] = array
    return out
