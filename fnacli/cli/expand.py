"""`fnacli expand SEED --space … -o SUPERNET`: the supernet of a space, remapped from a seed
(``fnacli.pipeline.expand``)."""

from __future__ import annotations

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.pipeline.expand import ExpandConfig

o = c.options_of(ExpandConfig)


@app.command("expand", help="Build the supernet of a search space with parameters remapped from a "
                            "seed MobileNetV2 (mixed ops per layer, shared mixed blocks for "
                            "channel search); α/β start near zero.")
def expand(
    seed: str = c.argument(ExpandConfig, "seed"),
    space: str = o("space", autocompletion=c.complete_space),
    output: str = o("output"),
    masks: str = o("masks"),
    mask_scope: str = o("mask_scope"),
    widen: str = o("widen"),
    noise: float | None = o("noise"),
    arch_seed: int = o("arch_seed"),
    init_std: float = o("init_std"),
    threads: int = o("threads"),
    force: bool = o("force"),
    as_json: bool = c.opt("--json", "Print the summary as JSON."),
) -> None:
    options = dict(locals())
    from fnacli.pipeline.expand import expand as run

    with c.err_console.status(f"remapping {seed} into the {space} supernet"):
        r = run(c.config(ExpandConfig, options))
    if as_json:
        c.print_json(r.to_dict())
        return
    # the result is a file: stdout stays empty without --json, the summary goes to stderr
    c.show(r.report())
