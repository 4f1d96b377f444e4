"""Azure Functions entry point (Python v2 model): builds the app and registers the blueprints, nothing else.

Routes: POST /api/alerts, POST /api/diagnose, GET /api/openapi.json (function key), GET /api/health (anonymous);
the queue worker on `denials`. The Azure SDKs, the service and intake are imported inside the handlers on first
use, so a cold start loads little more than azure.functions.
"""

import azure.functions as func

from remediate.app.health import bp as health_bp
from remediate.app.http import bp as http_bp
from remediate.app.worker import bp as worker_bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(http_bp)
app.register_functions(health_bp)
app.register_functions(worker_bp)
