"""fleet: fleets of LLM agents with git as the only coordination layer."""

__version__ = "0.1.0"
