"""Reading recordings back, one job per module.

``load`` (a run dir, sweep dir or records file into a typed episode frame), ``factors`` (the
factor columns a manifest declares), ``quality`` (the data-quality warnings), ``outcomes``
(success rates with intervals, per job and per factor bin), ``sensitivity`` (factor ranking
with SALib), ``report`` (the HTML page) and ``sweeps`` (the tables of a Hydra multirun).
"""
