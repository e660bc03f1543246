"""Search strategies, one file each, registered by name in STRATEGIES on
import; built only through create_strategy (nas_core.strategies.base)."""
from nas_core.strategies.base import (STRATEGIES, OneShotStrategy, SearchData, SearchResult, SearchStrategy,
                                      StrategyError, SupernetSpec, create_strategy, strategy_config)

# One import per strategy module (importing registers it).
# -- strategy modules --
from nas_core.strategies import darts, gdas, p_darts, pc_darts, snas  # noqa: F401,E402
from nas_core.strategies import fbnet  # noqa: F401,E402
from nas_core.strategies import dso_nas  # noqa: F401,E402
from nas_core.strategies import stacnas  # noqa: F401,E402
from nas_core.strategies import dnas_cam  # noqa: F401,E402
from nas_core.strategies import random, evolution, hier_evolution  # noqa: F401,E402
from nas_core.strategies import rl, pnas  # noqa: F401,E402
from nas_core.strategies import enas  # noqa: F401,E402
from nas_core.strategies import nao  # noqa: F401,E402

__all__ = ["STRATEGIES", "SearchStrategy", "OneShotStrategy", "SearchData", "SearchResult", "StrategyError",
           "SupernetSpec", "create_strategy", "strategy_config"]
