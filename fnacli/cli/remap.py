"""`fnacli remap SEED --spec SPEC -o OUT`: a seed's parameters on another architecture."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fnacli.cli.app import app
from fnacli.cli.common import checkpoint_output, err_console, fail, print_result

if TYPE_CHECKING:
    from fnacli.spec import ArchSpec


class Width(StrEnum):
    first = "first"
    bn = "bn"
    std = "std"
    l1 = "l1"


class Kernel(StrEnum):
    center = "center"
    dilate = "dilate"


class Widen(StrEnum):
    noise = "noise"
    zeros = "zeros"
    split = "split"


WIDEN_HELP = ("How added channels are filled: zeros plus small noise (Jung et al.; trainable), "
              "zeros (function preserving, but all-zero channels get no gradient), or split "
              "(Net2Net-style copies with divided outgoing weights: function preserving and "
              "trainable).")
NOISE_HELP = ("Noise std of added channels' conv weights, relative to the RMS of each seed "
              "tensor [0.01]; --widen noise only.")


@app.command("remap")
def remap(
    seed: str = typer.Argument(..., metavar="SEED",
                               help="MobileNetV2 checkpoint: torchvision/timm .pth/.pt (plain, "
                                    "wrapped or prefixed), fnacli .safetensors, or "
                                    "torchvision:IMAGENET1K_V1."),
    spec: str = typer.Option(..., "--spec", "-s", metavar="SPEC",
                             help="Target architecture: JSON file, '-' for stdin, or a built-in "
                                  "name (e.g. mobilenetv2-0.75, fna-ssdlite)."),
    output: str = typer.Option(..., "--output", "-o", metavar="OUT",
                               help="Output backbone checkpoint (.safetensors)."),
    width: Width = typer.Option(Width.first, "--width",
                                help="Narrowing rule: first channels (FNA), or the top |BN γ|, "
                                     "filter std or filter L1 channels."),
    kernel: Kernel = typer.Option(Kernel.center, "--kernel",
                                  help="Kernel rule: centre (pad/crop), or taps on a dilated "
                                       "grid."),
    widen: Widen = typer.Option(Widen.noise, "--widen", help=WIDEN_HELP),
    noise: float | None = typer.Option(None, "--noise", min=0.0, metavar="R", help=NOISE_HELP),
    rng_seed: int = typer.Option(0, "--seed", help="Random seed for --noise and new layers."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
) -> None:
    """Remap SEED's parameters onto the architecture SPEC (depth, width, kernel; FNA)."""
    from fnacli.io import check_writable
    from fnacli.remap import resolve_noise
    from fnacli.spec import load_arch

    checkpoint_output(output)
    if noise and widen != Widen.noise:
        fail(f"--noise applies to --widen noise, not --widen {widen.value}")
    if seed == "-":
        fail("SEED: '-' is not supported for checkpoints (stdin is for specs); give a file")
    if not seed.startswith("torchvision:") and not Path(seed).is_file():
        fail(f"{seed}: no such file")
    check_writable(output, force)  # fail before the slow part (importing torch)
    target = load_arch(spec)

    from fnacli.checkpoint import count_parameters, load_seed, save_checkpoint
    from fnacli.remap import remap_state

    seed_state, seed_spec = load_seed(seed)
    noise = resolve_noise(widen.value, noise)
    state, report = remap_state(seed_state, seed_spec, target, width=width.value,
                                kernel=kernel.value, widen=widen.value, noise=noise,
                                seed=rng_seed)
    # remap_state has checked that the output loads strictly into Backbone(target)
    params = count_parameters(state)
    strategies = {"width": width.value, "kernel": kernel.value, "widen": widen.value,
                  "noise": noise, "seed": rng_seed}
    meta = {"spec": target.to_dict(),
            "remap": {"seed": seed, "seed_spec": seed_spec.to_dict(), **strategies}}
    save_checkpoint(output, state, "backbone", meta, force=force)

    _print_table(report, seed_spec, target)
    err_console.print(f"wrote {output} ({params:,} parameters)")
    if as_json:
        print_result(json.dumps({"seed": seed, "output": output, "seed_spec": seed_spec.to_dict(),
                                 "spec": target.to_dict(), "strategies": strategies,
                                 "params": params, "stages": report}, indent=2))


def _ops_text(ops: list[str]) -> str:
    """Runs of equal ops compressed: k3_e6 k3_e6 k5_e3 -> k3_e6×2 k5_e3."""
    runs: list[list] = []
    for op in ops:
        if runs and runs[-1][0] == op:
            runs[-1][1] += 1
        else:
            runs.append([op, 1])
    return " ".join(op if n == 1 else f"{op}×{n}" for op, n in runs)


def _print_table(report: list[dict], seed_spec: ArchSpec, target: ArchSpec) -> None:
    from rich.table import Table

    table = Table(title="remap: seed → new", title_justify="left")
    for col in ("stage", "seed out", "seed ops", "new out", "new ops", "copied from"):
        table.add_column(col, justify="right" if "out" in col or col == "stage" else "left")
    table.add_row("stem", str(seed_spec.stem_out), "conv3x3", str(target.stem_out), "conv3x3",
                  "stem")
    for r in report:
        seed_out = f"{r['seed']['out']}" + (f" s{r['seed']['stride']}"
                                             if r["seed"]["stride"] != r["new"]["stride"] else "")
        new_out = f"{r['new']['out']}" + (f" s{r['new']['stride']}"
                                           if r["seed"]["stride"] != r["new"]["stride"] else "")
        table.add_row(str(r["stage"]), seed_out, _ops_text(r["seed"]["ops"]), new_out,
                      _ops_text(r["new"]["ops"]),
                      " ".join(f"L{j}" for j in r["sources"]))
    if target.head_out:
        src = "head" if seed_spec.head_out else "new (seed has none)"
        table.add_row("head", str(seed_spec.head_out or "-"), "conv1x1", str(target.head_out),
                      "conv1x1", src)
    err_console.print(table)
