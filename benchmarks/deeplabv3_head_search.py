"""Which DeepLabv3 head reproduces FNA Table 1? A grid over plausible configurations.

    python benchmarks/deeplabv3_head_search.py [--top 15]

The backbones (MobileNetV2 and FNA's searched `fna-deeplabv3`, output stride 16, with and
without the 1x1 head conv) are counted once with fvcore at 2048x1024 (fnacli.cost). Heads are
counted in closed form on the 64x128 stride-16 map: every conv's MAdds = weights x output
positions, image pooling costs its 1x1 conv once, BN and activations are free, params include
BN gamma/beta and the classifier bias. The grid: tap (320-channel last stage, or the 1280 head
conv), ASPP width, number of atrous branches, atrous branch type (depthwise-separable or
dense 3x3), image pooling, a 3x3 conv after the projection (none / separable / dense, as in
torchvision's DeepLabHead), and whether bias additions count as MAdds (FNA's detection figures
do, docs/madds.md). Ranked by the largest error over the four published numbers, each in
units of its last printed digit (0.01M params, 0.01B MAdds).
"""

from __future__ import annotations

import argparse
import itertools

from fnacli.cost import count as cost
from fnacli.nn.backbone import Backbone
from fnacli.spec import builtin_arch

SIZE = (2048, 1024)
CLASSES = 19
TARGETS = {"mobilenetv2": (2.57e6, 24.52e9), "fna-deeplabv3": (2.55e6, 24.17e9)}


def backbone_counts(name: str, with_head: bool) -> tuple[int, int, int]:
    """(params, MAdds, positions of the stride-16 map)."""
    net = Backbone(builtin_arch(name), with_head=with_head, output_stride=16)
    params, madds = cost.count(net, SIZE)
    return params, sum(madds.values()), (SIZE[0] // 16) * (SIZE[1] // 16)


def head_counts(cin: int, width: int, atrous: int, sep: bool, pool: bool, post: str,
                positions: int, bias_madds: bool) -> tuple[int, int]:
    """(params, MAdds) of ASPP + optional 3x3 + classifier on a `cin`-channel map."""
    params = madds = 0

    def conv(ci: int, co: int, k: int = 1, groups: int = 1, at: int = positions,
             bn: bool = True, bias: bool = False) -> None:
        nonlocal params, madds
        w = ci // groups * co * k * k
        params += w + (2 * co if bn else 0) + (co if bias else 0)
        madds += w * at + (co * at if bias and bias_madds else 0)

    conv(cin, width)  # 1x1 branch
    for _ in range(atrous):
        if sep:
            conv(cin, cin, 3, groups=cin)
            conv(cin, width)
        else:
            conv(cin, width, 3)
    if pool:
        conv(cin, width, at=1)
    conv(width * (1 + atrous + pool), width)  # projection
    if post == "sep":
        conv(width, width, 3, groups=width)
        conv(width, width)
    elif post == "dense":
        conv(width, width, 3)
    conv(width, CLASSES, bn=False, bias=True)
    return params, madds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    bb = {(n, h): backbone_counts(n, h) for n in TARGETS for h in (True, False)}
    rows = []
    grid = itertools.product((True, False), (64, 96, 128, 160, 192, 256, 320, 512), range(4),
                             (True, False), (True, False), ("none", "sep", "dense"),
                             (False, True))
    for with_head, width, atrous, sep, pool, post, bias_madds in grid:
        if atrous == 0 and not sep:
            continue  # the branch type is moot without atrous branches
        figs, err = {}, 0.0
        for name, (tp, tm) in TARGETS.items():
            bp, bm, pos = bb[(name, with_head)]
            cin = 1280 if with_head else 320
            hp, hm = head_counts(cin, width, atrous, sep, pool, post, pos, bias_madds)
            figs[name] = (bp + hp, bm + hm)
            err = max(err, abs(bp + hp - tp) / 1e4, abs(bm + hm - tm) / 1e7)
        rows.append((err, with_head, width, atrous, "sep" if sep else "dense", pool, post,
                     bias_madds, figs))
    rows.sort(key=lambda r: r[0])
    print("err(last digits) tap   width atrous type  pool  post   bias  "
          "MBV2 params/MAdds        FNA params/MAdds")
    for err, wh, width, atrous, typ, pool, post, bias, figs in rows[:args.top]:
        m, f = figs["mobilenetv2"], figs["fna-deeplabv3"]
        print(f"{err:7.1f}          {'1280' if wh else '320 '}  {width:5d} {atrous:6d} {typ:5s} "
              f"{pool!s:5s} {post:6s} {bias!s:5s} {m[0] / 1e6:.3f}M {m[1] / 1e9:.3f}B   "
              f"{f[0] / 1e6:.3f}M {f[1] / 1e9:.3f}B")


if __name__ == "__main__":
    main()
