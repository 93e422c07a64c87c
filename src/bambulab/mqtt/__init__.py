"""Live printers over MQTT (cloud and LAN): clients, TLS, the shared connection."""

from .client import AsyncBambuMQTT, BambuMQTT, MQTTClient, cloud_endpoint, lan_endpoint
from .core import Backoff
from .tls import PinStore

__all__ = [
    "AsyncBambuMQTT",
    "Backoff",
    "BambuMQTT",
    "MQTTClient",
    "PinStore",
    "cloud_endpoint",
    "lan_endpoint",
]
