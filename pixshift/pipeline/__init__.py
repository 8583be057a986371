"""The work behind a request: the Huey tasks, each image claimed, fetched, compressed and recorded,
results reused, requests taking turns in the queue, and the sweep that rescues lost work."""
