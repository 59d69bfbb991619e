"""What an architecture costs: MAdds counted with fvcore, the lookup tables of a search space,
measured latency, and the differentiable expected cost under α/β.

One concern a module (importing this package imports no torch):

- ``count``     fvcore's MAdds and parameter counts of a whole network, split by part
- ``units``     MAdds per output position of single convs (fvcore, cached on disk)
- ``geometry``  resolutions through a backbone at an input size
- ``space``     what a search space offers: candidates, widths, searched stages, scopes
- ``parts``     a task's neck and head, counted on stub backbones at every width that occurs
- ``table``     ``CostTable``: entries of architectures, their sums (profiles)
- ``expected``  E[cost] under α/β, shared by the MAdds and the latency table
- ``lut``       ``Lut``: the MAdds table of a search space, persistence, cache
- ``measure``   timing modules on this machine (the seam another runtime plugs into)
- ``latency``   ``LatencyTable``: the latency table of a search space
- ``check``     a latency table's predictions against whole networks
- ``cache``     where tables are cached (XDG), saved without failing a run
"""
