"""Dagster resources wrapping each server of the stack; built from the settings module."""
