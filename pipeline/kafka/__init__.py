"""Kafka: the clients (one place builds them), admin reads with shared errors, the publisher, the message browser and offset resets."""
