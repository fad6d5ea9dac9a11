"""Search strategies: one module each behind `Strategy.run(ctx)`, with their parameters in `params/`.

Nothing is imported here: the contract imports `aligner.search.registry`, and importing a submodule
runs this file first, so it must not pull in the run code (which imports the contract).
"""
