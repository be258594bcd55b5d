"""Image files: size without decoding, path lookup (the perceptual hash lives in core.dhash)."""
import os
import struct
from urllib.parse import unquote, urlparse

import cv2

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def image_size(path):
    """(width, height) read from the PNG/JPEG header (fast); other formats are decoded."""
    with open(path, "rb") as f:
        head = f.read(26)
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            return struct.unpack(">II", head[16:24])
        if head.startswith(b"\xff\xd8"):
            f.seek(2)
            while True:
                marker = f.read(2)
                if len(marker) < 2 or marker[0] != 0xFF:
                    break
                length = struct.unpack(">H", f.read(2))[0]
                if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
                    height, width = struct.unpack(">xHH", f.read(5))
                    return width, height
                f.seek(length - 2, os.SEEK_CUR)
    pixels = read_image(path)
    return pixels.shape[1], pixels.shape[0]


def read_image(path):
    pixels = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if pixels is None:
        raise ValueError(f"{path}: not a readable image")
    return pixels


class Resolver:
    """Finds the local file for a reference found in a label export.

    Tries, in order: the path as given (absolute, or relative to `base`), then under `root`
    every tail of the path or URL (so `s3://bucket/input/a/b.jpg` finds `<root>/a/b.jpg`),
    then any file of that name below `root`.
    """

    def __init__(self, base, root=None):
        self.base = os.path.abspath(base)
        self.root = os.path.abspath(root) if root else self.base
        self._by_name = None

    def find(self, ref):
        if not ref:
            return None
        parsed = urlparse(ref)
        remote = parsed.scheme not in ("", "file") and len(parsed.scheme) > 1
        path = unquote(parsed.path) if parsed.scheme else ref
        if not remote:
            candidate = path if os.path.isabs(path) else os.path.join(self.base, path)
            if os.path.isfile(candidate):
                return os.path.abspath(candidate)
        parts = [p for p in path.replace("\\", "/").split("/") if p]
        for start in range(len(parts)):
            candidate = os.path.join(self.root, *parts[start:])
            if os.path.isfile(candidate):
                return candidate
        return self._index().get(parts[-1]) if parts else None

    def _index(self):
        if self._by_name is None:
            self._by_name = {}
            for folder, _, files in os.walk(self.root):
                for name in files:
                    self._by_name.setdefault(name, os.path.join(folder, name))
        return self._by_name


def is_remote(ref):
    scheme = urlparse(ref).scheme
    return len(scheme) > 1 and scheme != "file"
