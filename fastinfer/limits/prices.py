"""The price of a deployment's tokens: its own ``price``, or the package's table of public models.

Owns: ``PRICE_TABLE`` — list prices, in USD per million tokens, of the public
OpenAI, Anthropic and Gemini models — and ``price_of(deployment)``, which a
deployment's cost accounting (metrics, key spend, budgets) uses: the
deployment's ``price`` when the config gives one, else the table's entry for its
upstream model, else free (self-hosted and mock upstreams). Must not touch:
usage, metrics, HTTP.

Where the table comes from: the providers' public pricing pages
(openai.com/api/pricing, anthropic.com/pricing, ai.google.dev/gemini-api/docs/pricing),
standard tier, as of ``PRICES_AS_OF``. Prices change: a deployment's ``price``
always wins. What the table does not model: batch and priority tiers, Gemini's
higher price for prompts over 128k/200k tokens, and Anthropic's cache-write
surcharge (cache writes are counted as input tokens at the input price).
"""
from __future__ import annotations

import re
from typing import NamedTuple

PRICES_AS_OF = "2025-11"


class Price(NamedTuple):
    """USD per million tokens; ``cached_input`` None: cached prompt tokens cost ``input``."""

    input: float
    output: float
    cached_input: float | None = None

    def cost_usd(self, prompt: int, completion: int, cached: int = 0) -> float:
        """The cost of one answer's usage (``cached`` is part of ``prompt``)."""
        cached_price = self.input if self.cached_input is None else self.cached_input
        return ((prompt - cached) * self.input + cached * cached_price + completion * self.output) / 1e6


FREE = Price(0.0, 0.0)

# family -> model id (without date or version suffix) -> Price
PRICE_TABLE: dict[str, dict[str, Price]] = {
    "openai": {
        "gpt-5": Price(1.25, 10.00, 0.125),
        "gpt-5-mini": Price(0.25, 2.00, 0.025),
        "gpt-5-nano": Price(0.05, 0.40, 0.005),
        "gpt-4.1": Price(2.00, 8.00, 0.50),
        "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
        "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
        "gpt-4o": Price(2.50, 10.00, 1.25),
        "gpt-4o-2024-05-13": Price(5.00, 15.00),
        "gpt-4o-mini": Price(0.15, 0.60, 0.075),
        "o1": Price(15.00, 60.00, 7.50),
        "o1-mini": Price(1.10, 4.40, 0.55),
        "o3": Price(2.00, 8.00, 0.50),
        "o3-mini": Price(1.10, 4.40, 0.55),
        "o4-mini": Price(1.10, 4.40, 0.275),
        "gpt-4-turbo": Price(10.00, 30.00),
        "gpt-4": Price(30.00, 60.00),
        "gpt-3.5-turbo": Price(0.50, 1.50),
        "text-embedding-3-small": Price(0.02, 0.0),
        "text-embedding-3-large": Price(0.13, 0.0),
        "text-embedding-ada-002": Price(0.10, 0.0),
    },
    "anthropic": {
        "claude-opus-4-5": Price(5.00, 25.00, 0.50),
        "claude-opus-4-1": Price(15.00, 75.00, 1.50),
        "claude-opus-4": Price(15.00, 75.00, 1.50),
        "claude-sonnet-4-5": Price(3.00, 15.00, 0.30),
        "claude-sonnet-4": Price(3.00, 15.00, 0.30),
        "claude-haiku-4-5": Price(1.00, 5.00, 0.10),
        "claude-3-7-sonnet": Price(3.00, 15.00, 0.30),
        "claude-3-5-sonnet": Price(3.00, 15.00, 0.30),
        "claude-3-5-haiku": Price(0.80, 4.00, 0.08),
        "claude-3-opus": Price(15.00, 75.00, 1.50),
        "claude-3-sonnet": Price(3.00, 15.00, 0.30),
        "claude-3-haiku": Price(0.25, 1.25, 0.03),
    },
    "gemini": {
        "gemini-2.5-pro": Price(1.25, 10.00),
        "gemini-2.5-flash": Price(0.30, 2.50),
        "gemini-2.5-flash-lite": Price(0.10, 0.40),
        "gemini-2.0-flash": Price(0.10, 0.40),
        "gemini-2.0-flash-lite": Price(0.075, 0.30),
        "gemini-1.5-pro": Price(1.25, 5.00),
        "gemini-1.5-flash": Price(0.075, 0.30),
        "gemini-1.5-flash-8b": Price(0.0375, 0.15),
    },
}

# which table a provider's models are in (self-hosted and mock upstreams have none: free)
_FAMILY = {"openai": "openai", "azure_openai": "openai", "anthropic": "anthropic", "gemini": "gemini"}
# what may follow a table name in a model id and still be that model: a date or version
# (gpt-4o-2024-08-06, claude-3-5-sonnet-20241022, gemini-2.0-flash-001), latest, a preview
_SUFFIX = re.compile(r"-(\d|latest|preview|exp)")


def table_price(provider: str, model: str) -> Price | None:
    """The table's price of ``model`` as ``provider`` names it, or None when it is not a public model
    the table knows. A dated or versioned id takes its model's price (the longest name that fits)."""
    table = PRICE_TABLE.get(_FAMILY.get(provider, ""))
    if not table:
        return None
    model = model.removeprefix("models/")
    if model in table:
        return table[model]
    best = None
    for name in table:
        if model.startswith(name) and _SUFFIX.match(model, len(name)) and (best is None or len(name) > len(best)):
            best = name
    return table[best] if best else None


def price_of(deployment) -> Price:
    """What ``deployment``'s tokens cost: its ``price``, else the table's, else nothing."""
    p = deployment.price
    if p is not None:
        return Price(p.input_per_mtok, p.output_per_mtok, p.cached_input_per_mtok)
    return table_price(deployment.provider, deployment.upstream_model) or FREE
