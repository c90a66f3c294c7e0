"""Point-in-time restore: targets, plans, replay into a server, verification and drills."""
