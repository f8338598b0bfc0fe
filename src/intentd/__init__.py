"""intentd: run a coding agent durably."""

__version__ = "0.1.0"
