"""Elasticsearch: the client, the task index (mapping, bulk writes at external versions) and index comparison."""
