"""Which DeepLabv3+ head reproduces FNA Table 1? A grid over plausible configurations.

    python benchmarks/deeplabv3plus_head_search.py [--top 15]

FNA Table 1's DeepLabv3+ row (FNA's searched `fna-deeplabv3`, 1024x2048, 19 classes):
5.71M params, 210.11B MAdds at output stride 16, 313.87B at output stride 8. The backbones
(with and without the 1x1 head conv, at both output strides) are counted once with fvcore
(fnacli.cost). Heads are counted in closed form: every conv's MAdds = weights x output
positions (ASPP on the 64x128 or 128x256 map, the decoder on the 256x512 stride-4 map), image
pooling costs its 1x1 conv once, BN and activations are free, params include BN gamma/beta and
the classifier bias. The grid: ASPP input (the 320-channel last stage or the 1280 head conv),
ASPP width, number and type (dense or depthwise-separable) of atrous branches, image pooling,
the decoder's stride-4 tap (the 24-channel stage output, or the 144-channel expansion of the
next layer), its projection width, the decoder's 3x3 convs (one or two, dense or separable,
their width), and two counting conventions the paper may have used: bias additions of the
classifier, and interpolation outputs (one add per element of the upsampled ASPP map and/or of
the upsampled logits). Ranked by the largest error over the three published numbers, each in
units of its last printed digit (0.01M params, 0.01B MAdds). fnacli counts conv MACs only
(the rows with bias and interp "-"); the first such row is the `deeplabv3plus` task.
"""

from __future__ import annotations

import argparse
import itertools

from fnacli.cost import count as cost
from fnacli.nn.backbone import Backbone
from fnacli.spec import builtin_arch

W, H = 2048, 1024
CLASSES = 19
TARGET_PARAMS, TARGET_MADDS = 5.71e6, {16: 210.11e9, 8: 313.87e9}
LOW4 = (H // 4) * (W // 4)  # positions of the stride-4 map
FULL = H * W


def backbone_counts(with_head: bool, output_stride: int) -> tuple[int, int]:
    net = Backbone(builtin_arch("fna-deeplabv3"), with_head=with_head,
                   output_stride=output_stride)
    params, madds = cost.count(net, (W, H))
    return params, sum(madds.values())


class Counter:
    def __init__(self) -> None:
        self.params = self.madds = 0

    def conv(self, ci: int, co: int, k: int, at: int, groups: int = 1, bn: bool = True,
             bias: bool = False) -> None:
        w = ci // groups * co * k * k
        self.params += w + (2 * co if bn else 0) + (co if bias else 0)
        self.madds += w * at

    def sep_or_dense(self, ci: int, co: int, at: int, sep: bool) -> None:
        if sep:
            self.conv(ci, ci, 3, at, groups=ci)
            self.conv(ci, co, 1, at)
        else:
            self.conv(ci, co, 3, at)


def aspp(c: Counter, cin: int, width: int, atrous: int, sep: bool, pool: bool, at: int) -> None:
    c.conv(cin, width, 1, at)
    for _ in range(atrous):
        c.sep_or_dense(cin, width, at, sep)
    if pool:
        c.conv(cin, width, 1, 1)
    c.conv(width * (1 + atrous + pool), width, 1, at)  # projection


def decoder(c: Counter, enc: int, low_in: int, low_out: int, convs: int, sep: bool,
            width: int) -> None:
    c.conv(low_in, low_out, 1, LOW4)
    cin = enc + low_out
    for _ in range(convs):
        c.sep_or_dense(cin, width, LOW4, sep)
        cin = width
    c.conv(cin, CLASSES, 1, LOW4, bn=False, bias=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    bb = {(h, s): backbone_counts(h, s) for h in (False, True) for s in (16, 8)}
    rows = []
    grid = itertools.product((False, True), (128, 192, 256, 320, 512), range(4), (False, True),
                             (True, False), (24, 144), (32, 48, 64), (1, 2), (False, True),
                             (128, 256), (False, True), ("-", "aspp", "logits", "both"))
    for (with_head, aw, atrous, asep, pool, low_in, low_out, convs, dsep, dw, bias,
         interp) in grid:
        if atrous == 0 and asep:
            continue  # the branch type is moot without atrous branches
        figs: dict[int, int] = {}
        params = 0
        for s in (16, 8):
            c = Counter()
            aspp(c, 1280 if with_head else 320, aw, atrous, asep, pool, (H // s) * (W // s))
            decoder(c, aw, low_in, low_out, convs, dsep, dw)
            extra = (CLASSES * LOW4 if bias else 0) + \
                (aw * LOW4 if interp in ("aspp", "both") else 0) + \
                (CLASSES * FULL if interp in ("logits", "both") else 0)
            bp, bm = bb[(with_head, s)]
            params, figs[s] = bp + c.params, bm + c.madds + extra
        err = max([abs(params - TARGET_PARAMS) / 1e4] +
                  [abs(figs[s] - TARGET_MADDS[s]) / 1e7 for s in (16, 8)])
        rows.append((err, with_head, aw, atrous, "sep" if asep else "dense", pool, low_in,
                     low_out, convs, "sep" if dsep else "dense", dw, bias, interp, params, figs))
    rows.sort(key=lambda r: r[0])
    print("err  aspp-in width atrous type  pool  low  proj convs type  width bias  interp "
          "params    OS16      OS8")
    conv_only = next(r for r in rows if not r[11] and r[12] == "-")
    shown = rows[:args.top] + ([conv_only] if conv_only not in rows[:args.top] else [])
    for (err, wh, aw, atrous, at, pool, li, lo, convs, dt, dw, bias, interp, params,
         figs) in shown:
        print(f"{err:4.1f} {'1280' if wh else '320 '}    {aw:5d} {atrous:6d} {at:5s} "
              f"{pool!s:5s} {li:4d} {lo:4d} {convs:5d} {dt:5s} {dw:5d} {'yes' if bias else '-':5s}"
              f" {interp:6s} {params / 1e6:.3f}M {figs[16] / 1e9:.3f}B {figs[8] / 1e9:.3f}B")


if __name__ == "__main__":
    main()
