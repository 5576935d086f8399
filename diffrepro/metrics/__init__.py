"""Metrics: FID (clean-fid compatible), memorization (nearest neighbours), generalization."""
