"""`reorder_state` lives in `lmforge.nn.state` (backbones use it too); imported here for callers
of the decoding API."""

from ..nn.state import reorder_state

__all__ = ["reorder_state"]
