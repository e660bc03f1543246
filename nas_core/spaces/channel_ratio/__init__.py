"""The channel-ratio space (dc-nas.md §4.1), registered as ``channel_ratio``."""
from nas_core.spaces.channel_ratio.network import ChannelRatioNet, init_weights
from nas_core.spaces.channel_ratio.space import (ChannelRatioConfig, ChannelRatioGenotype,
                                                 ChannelRatioSpace)

__all__ = ["ChannelRatioConfig", "ChannelRatioGenotype", "ChannelRatioNet", "ChannelRatioSpace", "init_weights"]
