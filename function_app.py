"""Azure Functions entry point (Python v2 model): builds the app and registers the blueprints, nothing else.

Azure SDK management clients are imported lazily inside the handlers' core calls (cold start).
"""

import azure.functions as func

from remediate.app.health import bp as health_bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(health_bp)
