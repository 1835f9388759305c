"""Test app module without application_setup: the engine must refuse to start."""

import wallaroo  # noqa: F401

VALUE = 1
