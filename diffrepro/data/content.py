"""Loaded pixels identified by content, not by file names or order.

`pixels_sha256(images)`, in the provenance of every prepared dataset: a hash of the loaded pixels that
does not depend on file names or on the order the images come in (it hashes the sorted list of
per-image digests), and changes when one pixel changes. A user dataset's images are also *put in* that
content order before subsets are drawn (`content_order`), so renaming files or reordering an array gives
the same subsets, and a folder of PNGs and an .npz of the same pixels prepare alike.

The planner's identity of a dataset entry (from its files, before anything is decoded) is
identity.fingerprint.
"""
from __future__ import annotations

import hashlib

import numpy as np


# --- pixels ------------------------------------------------------------------------------------------

def image_digests(images: np.ndarray) -> list[bytes]:
    """sha256 of each image's shape and raw uint8 bytes."""
    shape = "x".join(str(s) for s in images.shape[1:]).encode() + b"|"
    return [hashlib.sha256(shape + np.ascontiguousarray(img).tobytes()).digest() for img in images]


def content_order(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The permutation that sorts images by (pixel digest, label): an order set by content alone."""
    digests = image_digests(images)
    return np.array(sorted(range(len(images)), key=lambda i: (digests[i], int(labels[i]))), dtype=np.int64)


def pixels_sha256(images: np.ndarray, digests: list[bytes] | None = None) -> str:
    """Order-independent hash of a set of images (a multiset: duplicates count)."""
    digests = image_digests(images) if digests is None else digests
    h = hashlib.sha256(f"pixels-v1|{len(digests)}|".encode())
    for d in sorted(digests):
        h.update(d)
    return h.hexdigest()


def describe_content(images: np.ndarray, labels: np.ndarray) -> dict:
    """Provenance of loaded pixels: count, image shape, pixels_sha256, and a labels hash over the
    sorted (digest, label) pairs (relabelling an image changes it, renaming a file does not)."""
    digests = image_digests(images)
    h = hashlib.sha256(b"labels-v1|")
    for d, y in sorted(zip(digests, (int(v) for v in labels))):
        h.update(d + y.to_bytes(8, "little", signed=True))
    return {"n_images": int(len(images)), "image_shape": [int(s) for s in images.shape[1:]],
            "pixels_sha256": pixels_sha256(images, digests), "labels_sha256": h.hexdigest()}
