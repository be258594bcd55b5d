"""The perceptual hash that tells near-duplicate frames apart, in one place for every part.

`deeplens-ctl pull` skips frames near one already kept, the studio and `manifest split` group
near-duplicates, and the device's store of frames worth labelling (edge/keep.py) skips a frame
near the last one it kept: all with this hash, so one distance means the same everywhere.
"""
import cv2

HASH_BITS = 256


def dhash(pixels, size=16):
    """256-bit difference hash: near-identical frames differ in a few bits.

    16x16 rather than the usual 8x8: frames of one table with a small object moving on it
    all look alike at 8x8, so 8x8 would group a whole capture session as one scene.
    """
    gray = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, (size + 1, size), interpolation=cv2.INTER_AREA)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a, b):
    return bin(a ^ b).count("1")
