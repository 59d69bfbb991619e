"""A split's per-image and per-box records in one contiguous numpy byte buffer.

Data-loader workers are forked from the process that loaded the split. Python objects (dicts,
lists, ``Path``s, ints) there get their reference counts and GC headers written whenever a
worker touches them, so each worker ends up with a private copy of every page it read: a
dataset held as a pycocotools index grows every worker by hundreds of MB over an epoch. A few
numpy arrays over one buffer have no per-record Python object to touch: workers read the
parent's pages and never copy them, and the whole table pickles (spawned workers, caches) as
one bytes object.

numpy rather than Arrow: fnacli already depends on numpy, the records are a handful of flat
columns (no nesting, no strings beyond one path per image) and no other process or language
reads them, so Arrow's format would add a large dependency for nothing used here.
"""

from __future__ import annotations

import os

import numpy as np

_ALIGN = 8


class Records:
    """Named numpy arrays that are views of one uint8 buffer (``buffer``).

    Built with :meth:`pack`; ``layout`` is ``((name, dtype, shape), ...)`` in buffer order.
    Image columns have one row per image (ascending image id); box columns one row per box,
    grouped by image (``box_end[i]`` ends image i's boxes, in the annotation file's order);
    ``path_bytes[path_end[i-1]:path_end[i]]`` is image i's file path (``os.fsencode``).
    """

    def __init__(self, buffer: np.ndarray, layout: tuple[tuple[str, str, tuple[int, ...]], ...]):
        self.buffer = buffer
        self.layout = layout
        self._columns: dict[str, np.ndarray] = {}
        offset = 0
        for name, dtype, shape in layout:
            dt = np.dtype(dtype)
            count = int(np.prod(shape)) if shape else 1
            view = buffer[offset:offset + count * dt.itemsize].view(dt).reshape(shape)
            self._columns[name] = view
            offset += -(-count * dt.itemsize // _ALIGN) * _ALIGN

    @classmethod
    def pack(cls, **columns: np.ndarray) -> Records:
        """Copy ``columns`` into one fresh buffer (each column starts 8-byte aligned)."""
        layout, sizes = [], []
        for name, arr in columns.items():
            arr = np.ascontiguousarray(arr)
            layout.append((name, arr.dtype.str, tuple(arr.shape)))
            sizes.append(-(-arr.nbytes // _ALIGN) * _ALIGN)
        buffer = np.zeros(sum(sizes), dtype=np.uint8)
        offset = 0
        for arr, size in zip(columns.values(), sizes, strict=True):
            raw = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
            buffer[offset:offset + raw.size] = raw
            offset += size
        return cls(buffer, tuple(layout))

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.__dict__["_columns"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getstate__(self) -> dict:
        return {"buffer": self.buffer, "layout": self.layout}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["buffer"], state["layout"])  # type: ignore[misc]

    # what the dataset asks of a row --------------------------------------------------------
    def __len__(self) -> int:
        return len(self._columns["image_id"])

    def path(self, row: int) -> str:
        end = self._columns["path_end"]
        start = int(end[row - 1]) if row else 0
        return os.fsdecode(self._columns["path_bytes"][start:int(end[row])].tobytes())

    def boxes(self, row: int) -> slice:
        """The box rows of image ``row``."""
        end = self._columns["box_end"]
        return slice(int(end[row - 1]) if row else 0, int(end[row]))


def pack_paths(paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(path_bytes, path_end) of :class:`Records` for these paths."""
    encoded = [os.fsencode(p) for p in paths]
    ends = np.cumsum([len(b) for b in encoded], dtype=np.int64)
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), ends
