"""Consumer-group lag: reading it from Kafka, judging it (Burrow's rules), its history and membership trail."""
