"""Coordination between processes and devices sharing one Redis: heartbeats, locks, leader election."""
