"""The one list of the app's blueprints, so function_app.py and `kv-remediate serve` build the same app."""

from __future__ import annotations

import azure.functions as func


def build_app() -> func.FunctionApp:
    """A FunctionApp with every blueprint: HTTP routes, health, the findings page, the queue worker, the revocation
    timer and Slack interactivity (its route and its queue worker)."""
    from .health import bp as health_bp
    from .http import bp as http_bp
    from .page import bp as page_bp
    from .slack import bp as slack_bp
    from .timer import bp as timer_bp
    from .worker import bp as worker_bp

    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    for bp in (http_bp, health_bp, page_bp, worker_bp, timer_bp, slack_bp):
        app.register_functions(bp)
    return app
