"""Schemathesis hooks for the contract run (scripts/dev.sh contract).

A generated Idempotency-Key is reused across generated requests with different bodies, which
the API rightly refuses (422 idempotency_key_reused). A valid generated key is replaced by a
fresh one per request, so each request is judged on its own; invalid keys are kept, so their
refusal is still checked.
"""

import re
import uuid

import schemathesis

VALID_KEY = re.compile(r"[!-~]{1,256}")


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if case.method.upper() == "POST" and case.path == "/api/v1/orders":
        _name_each_sku_once(case.body)
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and VALID_KEY.fullmatch(key):
        headers["Idempotency-Key"] = uuid.uuid4().hex
        case.headers = headers


VALID_SKU = re.compile(r"[^\u0000-\u001f\u007f-\u009f]{1,64}")


def _name_each_sku_once(body):
    """An order names each SKU on one line, a rule JSON Schema cannot state (`uniqueItems`
    compares whole lines). A valid SKU seen on an earlier line is renamed, so a valid body
    stays valid; the rule itself is tested by the integration tests."""
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return
    seen = set()
    for index, item in enumerate(items):
        sku = item.get("sku") if isinstance(item, dict) else None
        if not isinstance(sku, str):
            continue
        if sku in seen and VALID_SKU.fullmatch(sku):
            item["sku"] = f"line-{index}"
        seen.add(item["sku"])
