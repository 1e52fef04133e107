"""compoundry: serve compound AI systems on MLflow, Prefect and BentoML."""

__version__ = "0.1.0"
