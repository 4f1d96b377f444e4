"""``kv-remediate serve``: the function app's own decorated functions, run on loopback the way ``func start`` runs
them, for runbook development, tests and benchmarks. No handler is implemented twice: every route and the queue
worker are found in ``function_app.app.get_functions()`` and called with ``azure.functions`` objects.

- HTTP: a threaded server (TCP_NODELAY, deep backlog, HTTP/1.1 keep-alive) on ``127.0.0.1:7071`` maps
  ``/{routePrefix}/{route}`` (host.json, default ``api``) to the function whose trigger has that route and method.
  Async functions run on one event loop (as the Python worker runs them), sync ones on the request's thread.
  Function keys: ``serve`` always requires one on routes above ANONYMOUS (``code`` query or ``x-functions-key``):
  ``--function-key`` or ``KV_REMEDIATE_FUNCTION_KEY``, else a random key is generated and printed at start;
  ``--insecure-no-key`` turns the check off (then browser-shaped simple requests are refused, see below).
  (``HttpServer`` embedded in tests checks a key only when given one.)
- Browser safety (any mode): the ``Host`` header must name a loopback address or name (or the bound host) with the
  bound port, which defeats DNS rebinding; a request whose ``Origin`` is not this server's, or whose
  ``Sec-Fetch-Site`` is ``cross-site``/``same-site``, is refused (403), so no web page can call the routes; without
  a key, a POST with a CORS "simple" content type (``text/plain``, form encodings) from a browser (``Origin``,
  ``Referer``, ``Sec-Fetch-*`` or a ``Mozilla/`` user agent) is refused as cross-site request forgery.
- Bodies: ``Content-Length`` (digits only) or ``Transfer-Encoding: chunked`` (hex sizes only, never negative, never
  past ``MAX_BODY`` in total), not both; anything else is 400, over the limit 413. Every error, 5xx included, is
  the app's error JSON.
- Queue: for each queue trigger, a pump receives messages from the trigger's queue (its ``connection`` setting,
  Azurite locally), invokes the function with a ``func.QueueMessage``, deletes the message on success and on
  failure makes it visible again after host.json's ``visibilityTimeout``, or moves it to ``<queue>-poison`` once
  its dequeue count reaches ``maxDequeueCount``, as the Functions host does. ``--workers N`` runs N pump
  processes (``python -m remediate.localhost worker``), so several "instances" share the queue and the claims table.

- Storage: the app's ``AzureWebJobsStorage`` (or its identity-based forms) when set; else the bundled Azurite,
  started in memory on free loopback ports without telemetry and stopped with serve (``azurite``).
- Supervision: every child (worker, extra HTTP process) is restarted after a back-off when it dies, at most
  ``--worker-restarts`` times within 5 minutes, else serve stops with exit 1 naming it; its state goes to a file
  /api/health reads (``parts``), and children stop with serve, even a killed one on Linux (``children``).

Settings come from the environment, then ``local.settings.json`` ``Values`` (as ``func start`` reads them);
``--snapshot FILE`` sets ``KV_REMEDIATE_SNAPSHOT``. A snapshot on an Azure host (``WEBSITE_INSTANCE_ID``,
``WEBSITE_SITE_NAME`` present) is a ConfigError: ``serve`` refuses to start.

Modules by role: ``discovery`` (the app's functions, routes and triggers), ``invoke`` (the event loop and the
invocation context), ``http`` (the HTTP server and its checks), ``pump`` (the queue pump), ``supervisor`` (the
``serve`` command; ``python -m remediate.localhost`` is its entry point), ``children`` (its processes and their
restarts), ``azurite`` (the embedded storage).
"""
