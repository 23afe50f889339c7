"""Sensors: the streaming sensor drives the exact-range streaming runs."""

from taobao_assets.sensors.streaming import streaming_sensor

sensors = [streaming_sensor]
