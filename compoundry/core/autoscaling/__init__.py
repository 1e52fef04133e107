"""Replica counts per deployment (Little's law, bounds, stabilisation, idle window) and warm-up plans."""
