"""Dataset sources and the subset stage's index splits."""
from nas_core.data.sources import SOURCES, DataError, DataSource, load_source, materialize_digits
from nas_core.data.subset import SPLITS, SplitIndices, load_splits, make_splits, weight_split, write_splits

__all__ = ["SOURCES", "SPLITS", "DataError", "DataSource", "SplitIndices", "load_source", "load_splits",
           "make_splits", "materialize_digits", "weight_split", "write_splits"]
