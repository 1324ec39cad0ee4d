"""``cqrs demo``: a steady trickle of realistic commands against a running API, including some
that fail validation or business rules, so a newcomer sees materializations, checks and lag move."""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

import httpx

from .procs import stop_signals

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Donald", "Frances"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Hamilton", "Knuth"]
SKUS = {"SKU-KEYBOARD": "49.90", "SKU-MOUSE": "19.99", "SKU-MONITOR": "229.00", "SKU-CABLE": "4.50"}
NEXT_STATUS = {"Created": "Paid", "Paid": "Shipped", "Shipped": "Delivered"}


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="send demo traffic to a running API")
    p.add_argument("--api", default="http://127.0.0.1:8000", help="API base URL")
    p.add_argument("--rate", type=float, default=2.0, help="commands per second (default 2)")
    p.add_argument("--count", type=int, default=0, help="stop after N commands (0: forever)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--api-key", default=None, help="X-API-Key for a secured API")
    p.set_defaults(func=run)


class DemoTraffic:
    """Chooses the next command from what exists so far; about 1 in 10 is deliberately bad."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.customers: list[str] = []
        self.orders: dict[str, str] = {}

    def next_command(self) -> dict[str, Any]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.05:
            return {"type": "RegisterCustomer", "name": "Bad Email", "email": "not-an-email"}
        if roll < 0.10 and self.orders:
            done = [o for o, s in self.orders.items() if s in ("Delivered", "Cancelled")]
            if done:
                return {"type": "UpdateOrderStatus", "orderId": rng.choice(done), "status": "Paid"}
        if not self.customers or roll < 0.2:
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            email = name.lower().replace(" ", ".") + f"{rng.randint(1, 999)}@example.com"
            return {"type": "RegisterCustomer", "name": name, "email": email}
        open_orders = [o for o, s in self.orders.items() if s in NEXT_STATUS]
        if open_orders and roll < 0.55:
            order_id = rng.choice(open_orders)
            if rng.random() < 0.1 and self.orders[order_id] in ("Created", "Paid"):
                return {"type": "CancelOrder", "orderId": order_id, "reason": "changed my mind"}
            return {
                "type": "UpdateOrderStatus",
                "orderId": order_id,
                "status": NEXT_STATUS[self.orders[order_id]],
            }
        lines = rng.sample(sorted(SKUS), rng.randint(1, 3))
        items = [{"sku": s, "quantity": rng.randint(1, 5), "unitPrice": SKUS[s]} for s in lines]
        return {"type": "CreateOrder", "customerId": rng.choice(self.customers), "items": items}

    def observe(self, command: dict[str, Any], status: int, body: dict[str, Any]) -> None:
        if status not in (200, 201):
            return
        if command["type"] == "RegisterCustomer":
            self.customers.append(body["aggregateId"])
        elif command["type"] in ("CreateOrder", "UpdateOrderStatus", "CancelOrder"):
            self.orders[body["aggregateId"]] = body["state"]["status"]


def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    traffic = DemoTraffic(rng)
    stopping = stop_signals()
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    sent = accepted = 0
    with httpx.Client(base_url=args.api, headers=headers, timeout=10) as client:
        while not stopping() and (args.count == 0 or sent < args.count):
            command = traffic.next_command()
            try:
                resp = client.post("/api/v1/commands", json=command)
            except httpx.HTTPError as exc:
                print(f"cqrs demo: {exc}; retrying", file=sys.stderr)
                time.sleep(2)
                continue
            sent += 1
            body = resp.json() if resp.content else {}
            traffic.observe(command, resp.status_code, body)
            accepted += resp.status_code in (200, 201)
            label = body.get("aggregateId") or body.get("title", "")
            print(f"{resp.status_code} {command['type']:<18} {label}", flush=True)
            time.sleep(1.0 / args.rate)
    print(f"cqrs demo: sent {sent}, accepted {accepted}", flush=True)
    return 0
