"""`fnacli expand SEED --space … -o SUPERNET`: the supernet of a space, remapped from a seed
(``fnacli.pipeline.expand``)."""

from __future__ import annotations

import json

import typer

from fnacli.cli import common as c
from fnacli.cli.app import app


@app.command("expand", help="Build the supernet of a search space with parameters remapped from a "
                            "seed MobileNetV2 (mixed ops per layer, shared mixed blocks for "
                            "channel search); α/β start near zero.")
def expand(
    seed: str = typer.Argument(..., metavar="SEED", help="Seed MobileNetV2 checkpoint "
                               "(torchvision/timm .pth, fnacli .safetensors, "
                               "torchvision:IMAGENET1K_V1 or timm:mobilenetv2_100)."),
    space: str = typer.Option("fna", "--space", metavar="fna|fna-channels|SPACE.json",
                              help="Search space: a built-in name, a JSON file or '-'."),
    output: str = c.opt("--output", "Output supernet checkpoint (.safetensors).",
                        metavar="SUPERNET"),
    masks: str = typer.Option("non-overlapping", "--masks", metavar="non-overlapping|overlapping",
                              help="Channel masks of the mixed blocks: Jung et al.'s "
                                   "non-overlapping segments or FBNetV2's overlapping masks."),
    widen: str = typer.Option("noise", "--widen", metavar="noise|zeros|split",
                              help="How channels wider than the seed's are filled (see 'fnacli "
                                   "remap --widen'): zeros plus small noise (Jung et al.), zeros, "
                                   "or Net2Net-style split copies."),
    noise: float | None = c.opt("--noise"),
    arch_seed: int = c.opt("--seed", "Seed of the α/β initial noise (1e-3·N(0,1)) and of the "
                                     "--widen noise."),
    init_std: float = typer.Option(1e-3, "--init-std", min=0.0,
                                   help="Std of the α/β initial noise (0: exactly zero)."),
    force: bool = c.opt("--force", "Overwrite the output."),
    as_json: bool = c.opt("--json", "Print the summary as JSON."),
) -> None:
    options = dict(locals())
    from fnacli.pipeline.expand import ExpandConfig
    from fnacli.pipeline.expand import expand as run

    with c.err_console.status(f"remapping {seed} into the {space} supernet"):
        r = run(c.config(ExpandConfig, options))
    if as_json:
        c.print_result(json.dumps(r.to_dict()))
        return
    # the result is a file: stdout stays empty without --json, the summary goes to stderr
    c.show(r.report())
