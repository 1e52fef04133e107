"""Prefect flows of the platform. Thin: each task calls compoundry/registry/bentos code."""
