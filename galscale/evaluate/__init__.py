"""Held-out evaluation of galscale models (metrics JSON + pictures)."""
