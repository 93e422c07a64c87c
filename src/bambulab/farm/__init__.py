"""The print farm: a queue that dispatches itself, a dashboard, notifications, statistics.

Built on the rest of the package: live state and commands from the MQTT
engine, printing (cloud and LAN), the camera fan-out, and the servers'
live API, tokens and metrics. ``bambu serve farm`` runs it (the ``farm``
extra).
"""
