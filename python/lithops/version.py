"""The Lithops API level this compatibility package follows."""

__version__ = "3.7.1"
