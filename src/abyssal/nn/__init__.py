"""Pure torch modules: layers, losses, fusion blocks. No I/O, no config objects."""

from abyssal.nn.recent_edges import recent_edge_mask
from abyssal.nn.time_encoding import TimeEncoding

__all__ = ["TimeEncoding", "recent_edge_mask"]
