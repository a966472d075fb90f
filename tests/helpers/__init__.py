"""Reusable test helpers: tiny hand-weighted models, real photos, state snapshots."""
