"""COMPSs' storage API (storage.api) on Bettong's persistent objects."""
