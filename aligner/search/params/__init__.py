"""Each strategy's parameters and worst-case cost: the part of a strategy the contract reads.

A strategy lives in two modules: `params/<name>.py` (its `Params`: the fields of a request's
`search` object it reads, their limits and its cost) and `<name>.py` (its run code). The run code
reads the request (aligner/contract.py), and the contract validates `search` with `Params`, so the
two halves cannot share a module without an import cycle.
"""
