"""The built-in strategies' run code, registered next to their parameters; `strategy_for` finds any.

The core imports `strategy_for` from here, so every built-in strategy can run once the core is
loaded; the contract, which cannot import run code, knows their parameters from the registry alone.
"""

from __future__ import annotations

from aligner.search import registry
from aligner.search.base import Strategy
from aligner.search.beam import Beam
from aligner.search.best_of_n import BestOfN
from aligner.search.particle_filter import ParticleFilter
from aligner.search.rejection import Rejection
from aligner.search.rps import RobustPreferenceSelection
from aligner.search.sample import Sample

for _strategy in (Sample(), BestOfN(), Rejection(), Beam(), RobustPreferenceSelection(), ParticleFilter()):
    registry.register(_strategy.params, _strategy)


def strategy_for(name: str) -> Strategy:
    """The run code of strategy `name`, built-in or registered later (a test's)."""
    strategy = registry.run_code(name)
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy {name!r} is registered with run code that is not a Strategy: {strategy!r}")
    return strategy
