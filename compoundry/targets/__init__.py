"""Deployment targets: where replicas of a deployment run."""
