"""Search strategies: one module each, all behind `Strategy.run(ctx)`."""

from aligner.search.base import DeadlineExceeded, Meter, Scored, SearchContext, SearchResult, Strategy
from aligner.search.beam import Beam
from aligner.search.best_of_n import BestOfN
from aligner.search.rejection import Rejection
from aligner.search.rps import RobustPreferenceSelection
from aligner.search.sample import Sample

STRATEGIES: dict[str, Strategy] = {s.name: s for s in (Sample(), BestOfN(), Rejection(), Beam(), RobustPreferenceSelection())}

__all__ = ["STRATEGIES", "DeadlineExceeded", "Meter", "Scored", "SearchContext", "SearchResult", "Strategy"]
