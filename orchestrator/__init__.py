"""Campus isolation, shutdown and staged restore orchestrator."""

__version__ = "0.1.0"
