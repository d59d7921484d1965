"""Event sources: where raw RecentChange events and their stream positions come from."""
