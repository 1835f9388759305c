"""Wallaroo 0.6.1's wallaroo.experimental (SourceConnectorConfig,
SinkConnectorConfig, SourceConnector, SinkConnector and the connector framing)
is not supported by Bettong yet: importing it says so, rather than giving an
application connectors that would not connect."""

raise ImportError(
    "wallaroo.experimental (Wallaroo 0.6.1's connectors: SourceConnectorConfig, "
    "SinkConnectorConfig, SourceConnector, SinkConnector) is not supported by Bettong yet")
