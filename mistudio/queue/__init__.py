"""The reliable job queue: Huey on Redis with leases (at-least-once), priorities, job records."""
