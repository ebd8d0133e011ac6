"""Batch decisions: forecasts, shelf-life rules, reorders, transfers and their accuracy."""
