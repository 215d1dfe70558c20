"""The core: domain, event codec, settings and pure helpers. Imports nothing else of taskstream and does no I/O."""
