"""Tool and goal manifests: JSON files validated with JSON Schema."""
