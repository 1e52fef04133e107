"""Scaling: the autoscaler loop (in the gateway) and the targets replicas run on (``targets/``)."""
