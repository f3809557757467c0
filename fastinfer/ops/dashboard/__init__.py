"""The dashboard's static files: one HTML page, its stylesheet and its script.

Owns: reading the files shipped beside this module once, at start-up, and the
headers they are served with (a content security policy that allows only this
origin's script, style and admin API; no caching of the page's data, which the
script fetches with the admin key). The page itself is public; everything it
shows comes from ``/admin/stats`` and needs the admin key.

Must not touch: the admin API's answers, the request path.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

_TYPES = {"index.html": "text/html; charset=utf-8",
          "dashboard.css": "text/css; charset=utf-8",
          "dashboard.js": "text/javascript; charset=utf-8"}
PAGE = "index.html"

_SECURITY_HEADERS = {
    # nothing from elsewhere, no inline script or style, no framing: the page handles an admin key
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                                "frame-ancestors 'none'"),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    headers: dict

    @property
    def etag(self) -> str:
        return self.headers["ETag"]


def load_assets() -> dict[str, Asset]:
    """Every file of the dashboard by its name, read from the installed package."""
    folder = resources.files(__name__)
    assets = {}
    for name, content_type in _TYPES.items():
        body = folder.joinpath(name).read_bytes()
        etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        assets[name] = Asset(body, {"Content-Type": content_type, "ETag": etag, **_SECURITY_HEADERS})
    return assets
