"""`fnacli expand SEED --space … -o SUPERNET`: the supernet of a space, remapped from a seed."""

from __future__ import annotations

import json

import typer

from fnacli.cli.app import app
from fnacli.cli.common import checkpoint_output, err_console, print_result


@app.command("expand", help="Build the supernet of a search space with parameters remapped from "
                            "a seed MobileNetV2 (mixed ops per layer, shared mixed blocks for "
                            "channel search); α/β start near zero.")
def expand(
    seed: str = typer.Argument(..., metavar="SEED",
                               help="Seed MobileNetV2 checkpoint (torchvision/timm .pth, fnacli "
                                    ".safetensors, or torchvision:IMAGENET1K_V1)."),
    space: str = typer.Option("fna", "--space", metavar="fna|fna-channels|SPACE.json",
                              help="Search space: a built-in name, a JSON file or '-'."),
    output: str = typer.Option(..., "-o", "--output", metavar="SUPERNET",
                               help="Output supernet checkpoint (.safetensors)."),
    masks: str = typer.Option("non-overlapping", "--masks",
                              metavar="non-overlapping|overlapping",
                              help="Channel masks of the mixed blocks: Jung et al.'s "
                                   "non-overlapping segments or FBNetV2's overlapping masks."),
    widen: str = typer.Option("noise", "--widen", metavar="noise|zeros|split",
                              help="How channels wider than the seed's are filled (see 'fnacli "
                                   "remap --widen'): zeros plus small noise (Jung et al.), "
                                   "zeros, or Net2Net-style split copies."),
    noise: float | None = typer.Option(None, "--noise", min=0.0, metavar="R",
                                       help="Noise std of added channels' conv weights, "
                                            "relative to the RMS of each seed tensor [0.01]; "
                                            "--widen noise only."),
    arch_seed: int = typer.Option(0, "--seed", help="Seed of the α/β initial noise (1e-3·N(0,1)) "
                                                    "and of the --widen noise."),
    init_std: float = typer.Option(1e-3, "--init-std", min=0.0,
                                   help="Std of the α/β initial noise (0: exactly zero)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the output."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    checkpoint_output(output)
    from fnacli.checkpoint import save_checkpoint
    from fnacli.cli.common import fail
    from fnacli.io import check_writable
    from fnacli.remap import WIDEN_RULES
    from fnacli.search import supernet_io
    from fnacli.search.masks import check_kind
    from fnacli.spec import load_space

    check_kind(masks)
    if widen not in WIDEN_RULES:
        fail(f"--widen: expected one of {', '.join(WIDEN_RULES)}, got {widen!r}")
    if noise and widen != "noise":
        fail(f"--noise applies to --widen noise, not --widen {widen}")
    check_writable(output, force)  # fail before the work, not after
    space_spec = load_space(space)
    with err_console.status(f"remapping {seed} into the {space_spec.name} supernet"):
        tensors, meta = supernet_io.expand(seed, space_spec, masks, arch_seed, init_std,
                                           widen=widen, noise=noise)
        save_checkpoint(output, tensors, "supernet", meta, force=force)
    info = supernet_io.summary(space_spec, tensors) | {"masks": masks, "output": output}
    if as_json:
        print_result(json.dumps(info))
        return
    print_result(f"{output}: supernet of space '{info['space']}' ({masks} masks): "
                 f"{info['architectures']:.4g} candidate architectures, "
                 f"{info['params'] / 1e6:.2f}M parameters, {info['bytes'] / 2**20:.1f} MiB")
