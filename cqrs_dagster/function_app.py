"""Azure Functions app (Python v2 programming model): the command API and the outbox relay.

- ``POST /api/v1/commands`` (HTTP trigger, function-key auth on top of the app's own
  ``CQRS_API_KEYS``): the same CommandHandler, validation and problem+json answers as the FastAPI
  route.
- ``relay_outbox`` (timer trigger, every 5 s): publishes pending outbox events to the bus
  (Event Hubs with ``CQRS_ENV=azure``); at-least-once, the same eventIds on a retry.

The Functions worker loads ``function_app.py`` from the app root: the deployment package has a
one-line root ``function_app.py`` with ``from cqrs_dagster.function_app import app`` (see
docs/deploy-azure.md). Settings come from app settings (``CQRS_*``) on the first invocation.
"""

from __future__ import annotations

import logging

import azure.functions as func

from cqrs_dagster.web.functions import default_host

RELAY_SCHEDULE = "*/5 * * * * *"  # NCRONTAB with seconds

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger(__name__)


@app.function_name("post_command")
@app.route(route="v1/commands", methods=["POST"])
def post_command(req: func.HttpRequest) -> func.HttpResponse:
    """Apply one command; 201 with the new state, 200 for a replayed commandId."""
    return default_host().handle_http(req)


@app.function_name("relay_outbox")
@app.timer_trigger(schedule=RELAY_SCHEDULE, arg_name="timer", run_on_startup=False)
def relay_outbox(timer: func.TimerRequest) -> None:
    """Move committed events from the write store's outbox onto the event bus."""
    published = default_host().run_relay()
    if published or timer.past_due:
        log.info("relayed %d events (past due: %s)", published, timer.past_due)
