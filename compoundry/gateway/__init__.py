"""The Prediction Service (gateway): component calls, pipeline DAGs, route cache; plus the control API.

``create_app(settings, config, store)`` builds the FastAPI app; run it with
``python -m compoundry.platform.gateway_process``.
"""

from compoundry.gateway.app import create_app

__all__ = ["create_app"]
