"""fastinfer: an LLM inference gateway.

One OpenAI- and Anthropic-compatible endpoint in front of many upstreams.
Packages, in the order a request meets them: ``gateway`` (HTTP in/out),
``engine`` (admission, attempt loop), ``routing`` (replica choice),
``providers`` (upstream wire formats), ``session`` (credentials and
connection pools); beside them ``config``, ``process`` (supervisor and
workers), ``metrics``, ``limits``, ``breaker`` and the compiled ``_core``.
"""
__version__ = "0.1.0"
