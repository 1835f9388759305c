"""The PyWren-IBM-Cloud API level this compatibility package follows."""

__version__ = "1.7.3"
