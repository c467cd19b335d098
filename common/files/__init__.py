"""Reading and writing files safely: atomic writes, checked JSON/YAML/checkpoint loads, streams, downloads."""
