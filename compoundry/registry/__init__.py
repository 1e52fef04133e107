"""The Model Store: the MLflow adapter (versions, aliases, tags), webhook verification, the demo models."""
