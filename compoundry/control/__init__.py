"""The control plane's entry: MLflow webhooks in (``api``), Prefect flow runs out (``prefect_runs``)."""
