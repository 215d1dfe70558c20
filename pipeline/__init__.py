"""taskstream's pipeline: domain, service, adapters and workers."""
