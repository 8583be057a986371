"""Webhooks: events signed the Standard Webhooks way, an outbox of deliveries, each delivered on a
schedule with one deadline per attempt, and the endpoints people register."""
