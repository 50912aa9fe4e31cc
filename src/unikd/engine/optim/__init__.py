"""Optimizers, learning-rate schedules and the weight EMA (their names are the config's choices)."""
