"""Azure Functions entry point (Python v2 model): builds the app and registers the blueprints, nothing else.

Routes: POST /api/alerts, POST /api/diagnose, POST /api/remediate, GET /api/openapi.json (function key),
GET /api/health (anonymous), GET /api/findings and its Approve/Reject posts (a person signs in: Easy Auth or an
Entra token); the queue worker on `denials`; the 5-minute timer that revokes expired grants.
The Azure SDKs, the service and intake are imported inside the handlers on first use, so a cold start loads
little more than azure.functions.
"""

from remediate.app.registry import build_app

app = build_app()
