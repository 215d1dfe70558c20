"""Replays: a replay's checked request, its row in the `replays` table, its worker, and the controls."""
