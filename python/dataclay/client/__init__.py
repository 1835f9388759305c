"""dataClay's client package: dataclay.client.api holds Client, init and finish."""
