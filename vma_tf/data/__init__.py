"""Datasets and the episode samplers that feed training."""
