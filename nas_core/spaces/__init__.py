"""Search spaces, one package per family, registered by name in SPACES
(STYLE.md 2); the SearchSpace protocol is in nas_core.spaces.base."""
from nas_core.spaces.base import (SPACES, GenotypeError, SampleResult, SearchSpace, make_space,
                                  unique_rows)

# One import per space package (importing registers it).
# -- space packages --
from nas_core.spaces import cell  # noqa: F401,E402
from nas_core.spaces import layerwise  # noqa: F401,E402
from nas_core.spaces import channel_ratio  # noqa: F401,E402
from nas_core.spaces import dso  # noqa: F401,E402
from nas_core.spaces import hierarchical  # noqa: F401,E402
from nas_core.spaces import global_cell  # noqa: F401,E402

__all__ = ["SPACES", "SearchSpace", "GenotypeError", "SampleResult", "make_space", "unique_rows"]
