"""Problem families: instance types, presets and file formats (one module each)."""
