"""Geometry, arrays, channels, problem instances and presets."""
