"""Redaction: what must never leave the process in an error message, a log line or an admin page.

Owns: ``redact(text)``, which every upstream error text passed to a client or a log
goes through: it removes every credential this process has read (``remember`` is
called where a credential value is installed) and anything shaped like an API key
(``sk-…``, ``sk-ant-…``, ``AIza…``, ``Bearer …``), and masks URL passwords;
``mask_url(url)`` (a URL's password and its secret-named query parameters), for every place a
configured URL is shown (``check-config``,
``/admin/state``, logs, errors). Must not touch: anything else — it is a pure
text filter (plus the set of remembered secrets), called on error paths and once per
access-log line (the request id a client may choose), so text with nothing to remove
costs one ``search`` for what every match of the three contains (``_anything``), no substitution.
"""
from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit

MASK = "****"
_MIN_SECRET = 6          # shorter values would mangle ordinary words; no real key is that short
_MAX_REMEMBERED = 16384  # rotations add values; the oldest are forgotten first (configs hold far fewer)

_KEY_SHAPES = re.compile(
    r"\bsk-[A-Za-z0-9_\-]{6,}"               # OpenAI (sk-, sk-proj-), Anthropic (sk-ant-), most compatibles
    r"|\bAIza[0-9A-Za-z_\-]{20,}"             # Google API keys
    r"|(?i:\bbearer\s+)[A-Za-z0-9._~+/=\-]{4,}"   # an Authorization header echoed back
)
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s/:@]*:)[^\s/@]+@")

_secrets: dict[str, None] = {}     # insertion-ordered set
_secret_pattern: re.Pattern | None = None
_stale = False                     # a secret was remembered since the patterns were made
_lock = threading.Lock()
# what every match of the substitutions contains (a remembered secret, or the literal start of a key
# shape, or a URL's "://"): text it finds nothing in is returned as it is. Literals, not the patterns
# themselves: the search is then a scan for their first characters, half the cost of the patterns'.
# Those first characters as one class, the rest after it: a third less again than the alternation.
_TRIGGERS = r"[sAbB:](?:k-|Iza|(?i:earer)|//)"
_anything: re.Pattern = re.compile(_TRIGGERS)


def remember(secret: str | None) -> None:
    """Add a credential value to what ``redact`` removes (values shorter than 6 are not). Cheap: the
    patterns are made again on the next ``redact``, once however many were remembered (a config's
    hundreds of gateway keys are read one by one)."""
    global _stale
    if not secret or len(secret) < _MIN_SECRET or secret in _secrets:
        return
    with _lock:     # a reload reads its config (and remembers its keys) in a thread
        _secrets[secret] = None
        while len(_secrets) > _MAX_REMEMBERED:
            del _secrets[next(iter(_secrets))]
        _stale = True


def _remade() -> None:
    """The patterns of the secrets remembered: one trie-shaped alternation, so a search follows one
    branch a character whatever their number (a flat ``a|b|c...`` of a thousand keys tries each at
    every position: 70 µs a request id, against ~1 for the trie)."""
    global _secret_pattern, _anything, _stale
    with _lock:     # stale again if one is remembered meanwhile: the next redact makes them anew
        _stale = False
        remembered = tuple(_secrets)
    secrets = _trie_pattern(remembered)
    _secret_pattern = re.compile(secrets) if secrets else None
    _anything = re.compile(f"{secrets}|{_TRIGGERS}" if secrets else _TRIGGERS)


def _trie_pattern(secrets) -> str:
    """A regular expression matching each of ``secrets``, the longest where one is another's prefix;
    runs without a branch are written as one literal, so its nesting is that of the branch points."""
    trie: dict = {}
    for secret in secrets:
        node = trie
        for char in secret:
            node = node.setdefault(char, {})
        node[""] = {}       # a secret ends here
    return _branches(trie)


def _branches(node: dict) -> str:
    alternatives = []
    for char, child in node.items():
        if not char:
            continue
        run = [char]
        while len(child) == 1 and "" not in child:
            (char, child), = child.items()
            run.append(char)
        alternatives.append(re.escape("".join(run)) + _branches(child))
    if not alternatives:
        return ""
    group = alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"
    # where a secret ends and a longer one goes on, the longer is tried first (a greedy ``?``)
    return f"(?:{group})?" if "" in node else group


def redact(text: str) -> str:
    """``text`` without remembered credentials, key-shaped tokens or URL passwords."""
    if _stale:
        _remade()
    if not text or _anything.search(text) is None:
        return text     # nothing any substitution would change (the common case: one search)
    return redact_unchecked(text)


def redact_unchecked(text: str) -> str:
    """``redact`` without the precheck: every substitution on ``text`` (what the precheck must agree with)."""
    if _stale:
        _remade()
    if _secret_pattern is not None:
        text = _secret_pattern.sub(MASK, text)
    text = _KEY_SHAPES.sub(_mask_key, text)
    return _URL_PASSWORD.sub(r"\1" + MASK + "@", text)


def redact_bytes(data: bytes) -> bytes:
    """``redact`` for UTF-8 bytes (an upstream's error event); the same object when nothing changed."""
    text = data.decode("utf-8", "surrogateescape")
    clean = redact(text)
    return data if clean == text else clean.encode("utf-8", "surrogateescape")


def _mask_key(match: re.Match) -> str:
    token = match.group(0)
    if token[:1] in "Bb":
        return token.split(None, 1)[0] + " " + MASK
    return token[:3] + MASK if token.startswith("sk-") else MASK


def mask_url(url: str) -> str:
    """``url`` with its secrets masked: the password of its user part (``https://user:****@host/v1``)
    and the value of every query parameter named like a secret (``redis://h/0?password=****``, redis-py's
    way to give a password to a unix socket; ``?sig=****``, ``?api_key=****``). Other URLs unchanged."""
    try:
        parts = urlsplit(url)
        password = parts.password
        if _misread_userinfo(parts, url):
            url, password = _mask_userinfo(url), MASK    # then its query's secrets, as any URL's
    except ValueError:
        return redact(url)
    # taken apart by hand: ``urlunsplit`` would drop the empty host of ``unix:///path``
    rest, hash_, fragment = url.partition("#")
    rest, mark, query = rest.partition("?")
    if password is not None:
        scheme, slashes, netloc_path = rest.partition("//")
        netloc, slash, path = netloc_path.partition("/")
        user = netloc.rpartition("@")[0].partition(":")[0]
        rest = f"{scheme}{slashes}{user}:{MASK}@{netloc.rpartition('@')[2]}{slash}{path}"
    masked = "&".join(_masked_parameter(pair) for pair in query.split("&")) if query else query
    return f"{rest}{mark}{masked}{hash_}{fragment}"


def _misread_userinfo(parts, url: str) -> bool:
    """Whether ``urlsplit`` cut a password short: one with an unencoded ``/``, ``?`` or ``#`` ends the
    URL's authority there (``redis://:pa/ss@host`` reads as host ``""``, port ``pa``, path
    ``/ss@host``, no password; ``redis://u:a@b/c@host`` as password ``a``, host ``b``, path
    ``/c@host``), so the rest of the password is shown as a path. Such a URL has an ``@`` after what
    urlsplit took for the authority and a ``:`` before that ``@``. (So have ``http://h:8080/v?to=a@b``
    and ``http://u:p@h/v?to=a@b``, which are then shown as ``http://h:****@b`` and ``http://u:****@b``:
    masking too much is the safe side of that rare case.)"""
    start = url.find("//")
    if start < 0:
        return False
    after = url[start + 2:]
    return "@" in after[len(parts.netloc):] and ":" in after.rpartition("@")[0]


def _mask_userinfo(url: str) -> str:
    """``url`` with everything between its user name and its last ``@`` masked."""
    scheme, slashes, rest = url.partition("//")
    userinfo, _, host = rest.rpartition("@")
    return f"{scheme}{slashes}{userinfo.partition(':')[0]}:{MASK}@{host}"


# a query parameter whose name says it carries a secret (password, passwd, pwd, secret, token, key,
# api_key, auth, credential, sig): its value is masked wherever a configured URL is shown
_SECRET_PARAMETER = re.compile(r"(?i)pass|pwd|secret|token|key|auth|cred|sig")


def _masked_parameter(pair: str) -> str:
    name, sep, value = pair.partition("=")
    return f"{name}={MASK}" if sep and value and _SECRET_PARAMETER.search(name) else pair
