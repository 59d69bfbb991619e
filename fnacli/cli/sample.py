"""`fnacli sample --space S -n 50 [--max-madds …] -o DIR|-`: random architectures of a space
under a budget, without a supernet (``fnacli.pipeline.sample``): DetNAS's random baseline's
draw."""

from __future__ import annotations

from fnacli.cli import common as c
from fnacli.cli.app import app
from fnacli.pipeline.sample import SampleConfig

o = c.options_of(SampleConfig)


@app.command("sample")
def sample(
    space: str = o("space", autocompletion=c.complete_space),
    n: int = o("n"),
    output: str | None = o("output", default=None),
    task: str | None = o("task"),
    size: str | None = o("size"),
    num_classes: int | None = o("num_classes"),
    cost_scope: str = o("cost_scope"),
    max_madds: str | None = o("max_madds"),
    min_madds: str | None = o("min_madds"),
    max_params: str | None = o("max_params"),
    min_params: str | None = o("min_params"),
    max_latency: str | None = o("max_latency"),
    latency_table: str | None = o("latency_table"),
    reference: str | None = o("reference"),
    seed: int = o("seed"),
    max_tries: int = o("max_tries"),
    force: bool = o("force"),
    as_json: bool = c.opt("--json", "A JSON report on stdout: the budget, and each "
                                    "architecture's spec and costs."),
) -> None:
    """Draw N different random architectures of a search space, every one inside all the
    given limits (MAdds, params, latency; absolute or relative to --reference), without a
    supernet: spec files in DIR (fine-tune each like the searched one: DetNAS's random
    baseline), or JSON lines on stdout with -o -."""
    options = dict(locals())
    from fnacli.pipeline.sample import sample as run

    if output is not None and output == "-" and as_json:
        c.fail("-o - and --json both want stdout; write the specs to a folder")
    r = run(c.config(SampleConfig, options, progress=True))
    c.show(r.report())
    if output == "-":
        c.print_json_lines(s.to_dict() for s in r.specs)
    elif as_json:
        c.print_json(r.to_dict())
