"""``fastinfer mock-upstream``: a fake provider for tests, demos and benches."""
from .server import Chaos, MockUpstream, serve

__all__ = ["Chaos", "MockUpstream", "serve"]
