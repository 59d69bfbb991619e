"""Checking a split's image files before training: the size each file says it has.

Two levels: ``header`` (the default) reads the few bytes that hold the size (JPEG markers up
to the frame header, PNG's IHDR; PIL's header parse for other formats and for anything the
fast parser does not recognise, so errors always read as PIL's); ``decode`` decodes every
file (JPEGs at 1/8 scale, which still reads all of their entropy-coded data), so truncated
or damaged files fail before the first step rather than in the middle of an epoch.

Parsing is Python-bound (the GIL), so large batches run in processes (forked from a fork
server), one per core.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from PIL import Image, UnidentifiedImageError

LEVELS = ("none", "header", "decode")  # index = how much of a file a check has read
_PNG = b"\x89PNG\r\n\x1a\n"
# JPEG markers without a length (TEM, RSTn, SOI) and the start-of-frame ones that hold the size
_STANDALONE = {0x01, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8}
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PARALLEL_FROM = 2048  # fewer files than this: not worth starting processes
_CHUNK = 1024


def _jpeg_size(f: object, head: bytes) -> tuple[int, int] | None:
    """The frame header's (width, height), walking the marker segments; None when the file is
    not a JPEG this walk understands (PIL then decides)."""
    buf, base, pos = head, 0, 2
    read, seek = f.read, f.seek  # type: ignore[attr-defined]
    for _ in range(10_000):
        if pos + 9 > len(buf):  # the next marker, its length and a frame header's start
            seek(base + pos)
            base, pos = base + pos, 0
            buf = read(4096)
            if len(buf) < 9:
                return None
        if buf[pos] != 0xFF:
            return None
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _STANDALONE:
            pos += 2
        elif marker in _SOF:
            h = buf[pos + 5] << 8 | buf[pos + 6]
            w = buf[pos + 7] << 8 | buf[pos + 8]
            return (w, h) if w and h else None
        elif marker == 0xD9 or marker == 0xDA:  # end of image / scan before any frame
            return None
        else:
            pos += 2 + (buf[pos + 2] << 8 | buf[pos + 3])
    return None


def header_size(path: str) -> tuple[int, int] | str:
    """The image size from the file's header; a string saying what is wrong otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
            size = None
            if head[:2] == b"\xff\xd8":
                size = _jpeg_size(f, head)
            elif head[:8] == _PNG and head[12:16] == b"IHDR" and len(head) >= 24:
                w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
                size = (w, h) if w and h else None
            if size is not None:
                return size
    except OSError as e:
        return _unreadable(e)
    return _pil_size(path, decode=False)


def decoded_size(path: str) -> tuple[int, int] | str:
    """The image size after checking that all of the file decodes."""
    return _pil_size(path, decode=True)


def _pil_size(path: str, decode: bool) -> tuple[int, int] | str:
    try:
        with Image.open(path) as im:
            size = im.size
            if decode:
                if im.format == "JPEG":
                    im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
                im.load()
            return size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        return _unreadable(e)
    except Image.DecompressionBombError:
        return "is too large to decode (PIL's decompression-bomb limit)"


def _unreadable(e: Exception) -> str:
    reason = " ".join(str(e).split())[:80]
    return f"cannot be read as an image ({e.__class__.__name__}: {reason})"


def _check_chunk(args: tuple[str, list[str]]) -> list[tuple[int, int] | str]:
    level, paths = args
    fn = decoded_size if level == "decode" else header_size
    return [fn(p) for p in paths]


def image_sizes(paths: Sequence[str], level: str,
                workers: int | None = None) -> list[tuple[int, int] | str]:
    """Each file's size (or what is wrong with it) at ``level`` (``header`` or ``decode``).

    Many files: processes from a fork server (``workers``, default one per core), since both
    checks are mostly Python or hold the GIL; few files, or no fork server: threads (the reads
    still overlap)."""
    if level not in ("header", "decode"):
        raise ValueError(f"unknown image check level {level!r}")
    paths = list(paths)
    workers = workers or os.cpu_count() or 1
    chunks = [(level, paths[i:i + _CHUNK]) for i in range(0, len(paths), _CHUNK)]
    pool: Callable[[], object]
    if (len(paths) >= _PARALLEL_FROM and workers > 1
            and "forkserver" in multiprocessing.get_all_start_methods()):
        # not a plain fork: the caller may have threads (torch, onnxruntime, data loaders)
        # holding locks at fork time, which leaves a forked child waiting forever; the fork
        # server is a fresh single-threaded process that children are forked from
        ctx = multiprocessing.get_context("forkserver")
        pool = lambda: ProcessPoolExecutor(min(workers, len(chunks)), mp_context=ctx)  # noqa: E731
    else:
        pool = lambda: ThreadPoolExecutor(min(8, max(1, len(chunks))))  # noqa: E731
    with pool() as ex:  # type: ignore[attr-defined]
        return [size for part in ex.map(_check_chunk, chunks) for size in part]
