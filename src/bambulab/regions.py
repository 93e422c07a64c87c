"""Hosts per region, and the one override that points everything at a simulator.

Every host of a region changes together: the REST API, the web host (where
the seed's TFA endpoint lives) and the MQTT broker. ``BAMBU_API_URL`` (or a
``base_url`` argument) replaces the API and web hosts at once, which is how the
simulator and internal environments are reached.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigurationError, excerpt

ENV_API_URL = "BAMBU_API_URL"


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where one region lives."""

    region: str
    api: str
    web: str
    portal: str
    mqtt_host: str
    mqtt_port: int = 8883


REGIONS: dict[str, Endpoints] = {
    "global": Endpoints(
        region="global",
        api="https://api.bambulab.com",
        web="https://bambulab.com",
        portal="https://e.bambulab.com",
        mqtt_host="us.mqtt.bambulab.com",
    ),
    "china": Endpoints(
        region="china",
        api="https://api.bambulab.cn",
        web="https://bambulab.cn",
        portal="https://e.bambulab.cn",
        mqtt_host="cn.mqtt.bambulab.com",
    ),
}

_ALIASES = {"global": "global", "us": "global", "intl": "global", "china": "china", "cn": "china"}


def normalize_region(region: str | None) -> str:
    """Map ``global``/``china`` and their short forms to the canonical name."""
    key = (region or "global").strip().lower()
    try:
        return _ALIASES[key]
    except KeyError:
        raise ConfigurationError(
            f"unknown region {excerpt(region)}: use 'global' or 'china'"
        ) from None


def endpoints(region: str | None = None, base_url: str | None = None) -> Endpoints:
    """The hosts to use: the region's, unless ``base_url`` or ``BAMBU_API_URL`` overrides them."""
    name = normalize_region(region)
    override = base_url or os.environ.get(ENV_API_URL) or None
    if not override:
        return REGIONS[name]
    override = override.strip().rstrip("/")
    if not override.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"API URL must start with http:// or https://: {excerpt(override)}"
        )
    base = REGIONS[name]
    return Endpoints(
        region=name,
        api=override,
        web=override,
        portal=override,
        mqtt_host=base.mqtt_host,
        mqtt_port=base.mqtt_port,
    )
