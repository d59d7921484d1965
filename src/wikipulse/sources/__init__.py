"""Event sources that are not files: the live EventStreams client."""
