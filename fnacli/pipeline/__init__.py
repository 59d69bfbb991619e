"""The pipeline's steps as library functions: one module per step, each a typed config
(a dataclass) in and a result object out. The CLI commands only parse options into these
configs, call the step and print its result; a notebook calls the same steps
(``fnacli.expand``, ``fnacli.search``, ... are these functions).

Every step also takes its config's fields directly (``remap(seed, spec, output=...)`` is
``remap(RemapConfig(seed, spec, output=...))``). Messages go to the ``fnacli`` logger and to
the optional ``on_message`` callback of the config; progress bars (training, LUT builds)
draw on stderr.
"""
