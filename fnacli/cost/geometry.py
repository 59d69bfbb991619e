"""Resolutions through a backbone: where every layer of a spec runs at a given input size.

Every conv in these networks has an odd kernel padded by k//2, so a stride-s layer maps a
side n to (n - 1) // s + 1; the cost and latency tables key their entries by these sizes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Res = tuple[int, int]  # (height, width)


def out_res(res: Res, stride: int) -> Res:
    """Output size of an odd-kernel conv padded by k//2 (every conv in these networks)."""
    return ((res[0] - 1) // stride + 1, (res[1] - 1) // stride + 1)


@dataclass(frozen=True)
class Geometry:
    """Resolutions through a backbone of a given stride pattern at an input size."""

    stem: Res
    stage_in: tuple[Res, ...]
    stage_out: tuple[Res, ...]

    @classmethod
    def of(cls, stem_stride: int, strides: Iterable[int], size: tuple[int, int]) -> Geometry:
        res = out_res((size[1], size[0]), stem_stride)
        stem, ins, outs = res, [], []
        for s in strides:
            ins.append(res)
            res = out_res(res, s)
            outs.append(res)
        return cls(stem, tuple(ins), tuple(outs))


def positions(res: Res) -> int:
    return res[0] * res[1]

