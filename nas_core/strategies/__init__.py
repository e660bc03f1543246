"""Search strategies, registered by name in STRATEGIES on import."""
from nas_core.strategies.base import STRATEGIES, SearchData, SearchResult, SearchStrategy

# One import per strategy module (importing registers it).
from nas_core.strategies import fbnet  # noqa: F401,E402
from nas_core.strategies import darts  # noqa: F401,E402
from nas_core.strategies import pc_darts  # noqa: F401,E402
from nas_core.strategies import p_darts  # noqa: F401,E402
from nas_core.strategies import gdas  # noqa: F401,E402

__all__ = ["STRATEGIES", "SearchStrategy", "SearchData", "SearchResult"]
