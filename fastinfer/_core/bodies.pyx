# cython: language_level=3, boundscheck=False, wraparound=False
"""What every request reads of a parsed JSON body, compiled.

Owns: ``chat_chars``, the count of the commonest body's prompt without walking it (``messages``
whose text is a string ``content`` or none, a string ``system`` at most), -1 for any other
shape: what a ``tpm`` limit's estimate starts from; ``walked_chars``, the count of any other
body's prompt by walking every text field (content parts, Anthropic's blocks, Gemini's parts);
``openai_usage``, an OpenAI answer's ``usage`` normalized, which every OpenAI-shaped answer goes
through, and ``openai_reply_usage``, a whole OpenAI reply's, checked and read in one call (a reply in
the plain subset scanned without being parsed, its usage's counts read where they lie, orjson only for
a usage key spelled with escapes: ``reply_usage_span``; any other reply parsed whole); and ``json_depth_exceeds``, whether a client's (valid) JSON body nests deeper than the
gateway allows, in one pass over its bytes. Same API and behaviour as the reference
``fastinfer._core.ref.bodies``, whose docstrings give the rules; the tests hold the two to the
same answers on generated bodies.

Why: ``chat_chars`` and ``openai_usage`` were some 80 interpreted opcodes a request each (a loop,
or a dozen lookups and checks), here dict lookups in C; the walk and the depth check grow with
the body (a tool-heavy body's walk 16 µs, 3.5 µs here; a 4 KiB prompt's depth check, two to six
bytes-method passes over it, 12.5 µs, 0.9 µs here: ``bench/micro/test_bench_validate.py``).

``prompt_tokens``: a prompt at ``CHARS_PER_TOKEN`` characters a token; ``usage_estimate``, the usage
of an answer its upstream did not count (a stream without a usage event), built on it;
``request_tokens``: a request's charge at admission (its ``prompt_tokens`` and the completion it
may ask for), which every request under a ``tpm`` limit is charged.

Must not touch: prices, HTTP. What a token is, before an upstream counts it, is
``constants.CHARS_PER_TOKEN``.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_Contains, PyDict_GetItem
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy

import orjson

from .constants import CHARS_PER_TOKEN, PROMPT_FIELDS, TEXT_KEYS

__all__ = ["chat_chars", "json_depth_exceeds", "openai_reply_usage", "openai_usage", "prompt_tokens",
           "reply_usage_span", "request_tokens", "usage_estimate", "walked_chars"]

cdef Py_ssize_t _CHARS_PER_TOKEN = CHARS_PER_TOKEN


cpdef Py_ssize_t prompt_tokens(dict body) except -1:
    """A request's prompt in tokens, before an upstream counts it: its characters (``chat_chars``,
    else ``walked_chars``), ``CHARS_PER_TOKEN`` a token, rounded up."""
    cdef Py_ssize_t chars = chat_chars(body)
    if chars < 0:
        chars = walked_chars(body)
    return (chars + _CHARS_PER_TOKEN - 1) // _CHARS_PER_TOKEN


cpdef dict usage_estimate(dict body, completion_tokens):
    """The usage of an answer its upstream did not count: the request ``body``'s ``prompt_tokens``
    and ``completion_tokens``, in ``openai_usage``'s shape, flagged ``usage_estimated`` (what a stream
    without a usage event is accounted: one dict, no interpreted step)."""
    prompt = prompt_tokens(body)
    return {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens, "usage_estimated": True}


cpdef object request_tokens(dict body):
    """A request's charge at admission: its ``prompt_tokens`` and, when it sets one, ``max_tokens``
    (else ``max_completion_tokens``) for every choice it asks for (``n``)."""
    tokens = prompt_tokens(body)
    most = body.get("max_tokens") or body.get("max_completion_tokens")
    if type(most) is int:
        n = body.get("n")
        tokens += most * (n if type(n) is int and n > 1 else 1)
    return tokens


cpdef Py_ssize_t chat_chars(dict body) except -2:
    """Characters of ``body``'s prompt when it has the commonest shape, else -1."""
    cdef PyObject *found
    cdef object content
    cdef dict message
    cdef Py_ssize_t total = 0
    found = PyDict_GetItem(body, "messages")
    if found == NULL or type(<object>found) is not list:
        return -1
    messages = <list>found
    if "contents" in body or "prompt" in body or "input" in body or "systemInstruction" in body:
        return -1
    found = PyDict_GetItem(body, "system")
    if found != NULL and <object>found is not None:
        if type(<object>found) is not str:
            return -1
        total = len(<str>found)
    for item in messages:
        if type(item) is not dict:
            return -1
        message = <dict>item
        found = PyDict_GetItem(message, "content")
        content = <object>found if found != NULL else None
        # exactly {"role", "content"} has no other text to count; any other message is looked at
        if not (len(message) == 2 and content is not None and "role" in message) \
                and ("text" in message or "parts" in message or "thinking" in message):
            return -1
        if type(content) is str:
            total += len(<str>content)
        elif content is not None:
            return -1
    return total


cdef inline object _count(object value):
    return value if type(value) is int else 0


cdef inline object _detail(dict u, str details, str name):
    cdef PyObject *found = PyDict_GetItem(u, details)
    if found == NULL or type(<object>found) is not dict:
        return 0
    found = PyDict_GetItem(<dict>found, name)
    return _count(<object>found) if found != NULL else 0


cdef object _loads = orjson.loads


def openai_reply_usage(body):
    """A whole OpenAI reply's normalized usage (see the reference); ``ValueError`` when it is not a
    JSON object. A reply in the plain subset (``reply_usage_span``) is checked by the scan and its
    ``usage`` read in place (``_span_usage``); any other is parsed whole, and orjson decides."""
    cdef const unsigned char *usage_at = NULL
    cdef const unsigned char *usage_end = NULL
    cdef const unsigned char *start
    if type(body) is bytes:
        start = <const unsigned char *>PyBytes_AS_STRING(<bytes>body)
        if _scan_reply(start, PyBytes_GET_SIZE(<bytes>body), &usage_at, &usage_end):
            if usage_at == NULL:
                return None
            usage = _span_usage(usage_at, usage_end)
            if usage is not _UNSURE:
                return usage
            usage = openai_usage(_loads(PyBytes_FromStringAndSize(<const char *>usage_at, usage_end - usage_at)))
            return usage if usage is not None and usage["total_tokens"] else None
    reply = _loads(body)
    if type(reply) is not dict:
        raise ValueError("the reply is not a JSON object")
    cdef PyObject *found = PyDict_GetItem(<dict>reply, "usage")
    if found == NULL:
        return None
    usage = openai_usage(<object>found)
    return usage if usage is not None and usage["total_tokens"] else None


def openai_usage(u):
    """OpenAI's ``usage``, normalized (see the reference); None when ``u`` is not an object."""
    if type(u) is not dict:
        return None
    cdef dict d = <dict>u
    cdef PyObject *found = PyDict_GetItem(d, "prompt_tokens")
    prompt = _count(<object>found) if found != NULL else 0
    found = PyDict_GetItem(d, "completion_tokens")
    completion = _count(<object>found) if found != NULL else 0
    return _normalized(prompt, completion, _detail(d, "prompt_tokens_details", "cached_tokens"),
                       _detail(d, "completion_tokens_details", "reasoning_tokens"))


cdef dict _normalized(prompt, completion, cached, reasoning):
    """The normalized usage of these counts: the three totals, and the cached and reasoning counts
    when not 0 (``openai_usage``'s, and ``_span_usage``'s from the bytes)."""
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if cached:
        usage["cached_tokens"] = cached
    if reasoning:
        usage["reasoning_tokens"] = reasoning
    return usage


cpdef Py_ssize_t walked_chars(dict body) except -1:
    """Characters of any body's prompt: every string under its prompt's fields, under ``text`` /
    ``content`` / ``parts`` / ``thinking`` keys or in lists."""
    cdef Py_ssize_t total = 0
    cdef PyObject *found
    for key in PROMPT_FIELDS:
        found = PyDict_GetItem(body, key)
        if found == NULL or <object>found is None:
            continue
        if isinstance(<object>found, str):
            total += len(<object>found)
        else:
            total += _text_chars(<object>found)
    return total


cdef Py_ssize_t _text_chars(object value) except -1:
    """The characters under ``value``, depth first: a string's, each list item's, a dict's text keys'.
    (Recursion is bounded: a body nests at most ``gateway.body.MAX_JSON_DEPTH`` levels.)"""
    cdef Py_ssize_t total = 0
    cdef PyObject *found
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        for item in <list>value:
            total += _text_chars(item)
    elif type(value) is dict:
        for k in TEXT_KEYS:
            found = PyDict_GetItem(value, k)
            if found != NULL:
                total += _text_chars(<object>found)
    elif isinstance(value, dict):       # a subclass: its own lookups
        for k in TEXT_KEYS:
            if k in value:
                total += _text_chars(value[k])
    return total


cpdef bint json_depth_exceeds(bytes raw, Py_ssize_t limit) except -1:
    """Does this (valid) JSON text nest arrays and objects more than ``limit`` deep? One pass: a
    string is skipped whole (an escape's backslash takes the next byte with it), an opening bracket
    is a level in, a closing one a level out."""
    if raw is None:
        raise TypeError("json_depth_exceeds: raw must be bytes")
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(raw)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(raw), i = 0, depth = 0
    cdef unsigned char c
    while i < n:
        c = p[i]
        if c == 0x22:                   # '"': past the string's closing quote
            i = _string_end(p, i + 1, n)
            continue
        elif c == 0x5B or c == 0x7B:    # '[' '{'
            depth += 1
            if depth > limit:
                return True
        elif c == 0x5D or c == 0x7D:    # ']' '}'
            depth -= 1
        i += 1
    return False


cdef inline Py_ssize_t _string_end(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) noexcept:
    """Where the string whose text starts at ``p[i]`` has ended (past its closing quote; ``n`` when it
    does not close): the next quote found by ``memchr`` closes it unless an odd run of backslashes
    (counted back to the text's start, or the last quote) escapes it. Prompts are mostly strings."""
    cdef const unsigned char *quote
    cdef Py_ssize_t j, k
    while True:
        quote = <const unsigned char *>memchr(p + i, 0x22, n - i)
        if quote == NULL:
            return n
        j = quote - p
        k = j
        while k > i and p[k - 1] == 0x5C:
            k -= 1
        if (j - k) % 2 == 0:
            return j + 1
        i = j + 1


# ------------------------------------------------------------ a reply's usage, without parsing the reply
#
# A whole answer is forwarded as it came; what the gateway needs of it is that it is a JSON object
# and its ``usage``. orjson builds every object of the reply to say so (~1.3 µs for a 341-byte
# reply, 0.27 µs for its usage alone). The scan below checks the reply in one pass without building
# anything, for a subset of JSON that orjson surely accepts — ASCII strings without surrogate escapes,
# numbers of at most 18 integer digits and 2 exponent digits (finite as doubles), at most
# ``_MOST_DEPTH`` levels, top-level keys without escapes — and finds the last top-level ``"usage"``
# value (orjson keeps a repeated key's last). Anything outside the subset, valid or not, is parsed
# whole as before: the scan only ever says "surely valid, usage here" or "let orjson decide". Its
# reference is orjson itself: ``tests/core/test_bodies.py`` holds what the scan is sure of to what
# orjson reads, on generated replies and on the same with bytes replaced or inserted anywhere.

cdef enum:
    _MOST_DEPTH = 64


cdef inline const unsigned char *_ws(const unsigned char *p, const unsigned char *end) noexcept nogil:
    while p < end and (p[0] == 32 or p[0] == 10 or p[0] == 13 or p[0] == 9):
        p += 1
    return p


cdef inline int _hex(unsigned char c) noexcept nogil:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    if 65 <= c <= 70:
        return c - 55
    return -1


cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil


cdef inline uint64_t _special8(const unsigned char *p) noexcept nogil:
    """The 8 bytes at ``p``: a mask whose lowest set bit (0x80 of a byte) marks the first that is not a
    plain string byte (a quote, a backslash, a control character, a byte past ASCII); 0 for none. The
    classic has-zero-byte and has-less-than word tests: their lowest flag is exact (a borrow only
    flags bytes above a true one)."""
    cdef uint64_t v, ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL
    cdef uint64_t quotes, slashes
    memcpy(&v, p, 8)
    quotes = v ^ (ones * 0x22)
    slashes = v ^ (ones * 0x5C)
    return (((quotes - ones) & ~quotes) | ((slashes - ones) & ~slashes) | ((v - ones * 0x20) & ~v) | v) & highs


cdef const unsigned char *_string(const unsigned char *p, const unsigned char *end, bint *escaped) noexcept nogil:
    """``p`` at a string's opening quote: just past its closing one, or NULL (outside the subset)."""
    cdef unsigned char c
    cdef int k, digit
    cdef unsigned int code
    cdef uint64_t special
    p += 1
    while True:
        if end - p >= 8:            # a word at a time, to the first byte that is not plain
            special = _special8(p)
            if special == 0:
                p += 8
                continue
            p += __builtin_ctzll(special) >> 3
        elif p >= end:
            return NULL
        c = p[0]
        if c == 34:                         # "
            return p + 1
        if c == 92:                         # backslash
            escaped[0] = True
            if end - p < 2:
                return NULL
            c = p[1]
            if c == 117:                    # \uXXXX, not a surrogate
                if end - p < 6:
                    return NULL
                code = 0
                for k in range(2, 6):
                    digit = _hex(p[k])
                    if digit < 0:
                        return NULL
                    code = (code << 4) | <unsigned int>digit
                if 0xD800 <= code <= 0xDFFF:
                    return NULL
                p += 6
            elif c == 34 or c == 92 or c == 47 or c == 98 or c == 102 or c == 110 or c == 114 or c == 116:
                p += 2
            else:
                return NULL
        elif c < 32 or c >= 128:
            return NULL
        else:
            p += 1                          # a plain byte of the last seven


cdef const unsigned char *_digits(const unsigned char *p, const unsigned char *end) noexcept nogil:
    while p < end and 48 <= p[0] <= 57:
        p += 1
    return p


cdef const unsigned char *_number(const unsigned char *p, const unsigned char *end) noexcept nogil:
    cdef const unsigned char *first
    if p < end and p[0] == 45:              # -
        p += 1
    if p >= end:
        return NULL
    if p[0] == 48:                          # a leading 0 stands alone
        p += 1
    elif 49 <= p[0] <= 57:
        first = p
        p = _digits(p, end)
        if p - first > 18:
            return NULL
    else:
        return NULL
    if p < end and p[0] == 46:              # .
        first = p + 1
        p = _digits(first, end)
        if p == first:
            return NULL
    if p < end and (p[0] == 101 or p[0] == 69):   # e E
        p += 1
        if p < end and (p[0] == 43 or p[0] == 45):
            p += 1
        first = p
        p = _digits(p, end)
        if p == first or p - first > 2:
            return NULL
    return p


cdef inline const unsigned char *_word(const unsigned char *p, const unsigned char *end, const char *word,
                                       Py_ssize_t n) noexcept nogil:
    if end - p < n or memcmp(p, word, <size_t>n) != 0:
        return NULL
    return p + n


cdef const unsigned char *_value(const unsigned char *p, const unsigned char *end, int depth) noexcept nogil:
    cdef bint escaped = False
    if p >= end:
        return NULL
    if p[0] == 123:
        return _object(p, end, depth + 1, NULL, NULL)
    if p[0] == 91:
        return _array(p, end, depth + 1)
    if p[0] == 34:
        return _string(p, end, &escaped)
    if p[0] == 116:
        return _word(p, end, b"true", 4)
    if p[0] == 102:
        return _word(p, end, b"false", 5)
    if p[0] == 110:
        return _word(p, end, b"null", 4)
    return _number(p, end)


cdef inline const unsigned char *_after_member(const unsigned char *p, const unsigned char *end,
                                               unsigned char closer, bint *closed) noexcept nogil:
    """After an array's item or an object's member: just past ``closer`` (``closed`` set), or past the
    comma and the space after it; NULL for anything else."""
    p = _ws(p, end)
    if p >= end:
        return NULL
    if p[0] == closer:
        closed[0] = True
        return p + 1
    if p[0] != 44:
        return NULL
    return _ws(p + 1, end)


cdef const unsigned char *_array(const unsigned char *p, const unsigned char *end, int depth) noexcept nogil:
    if depth > _MOST_DEPTH:
        return NULL
    p = _ws(p + 1, end)
    if p < end and p[0] == 93:
        return p + 1
    cdef bint closed = False
    while True:
        p = _value(p, end, depth)
        if p == NULL:
            return NULL
        p = _after_member(p, end, 93, &closed)
        if p == NULL or closed:
            return p


cdef const unsigned char *_object(const unsigned char *p, const unsigned char *end, int depth,
                                  const unsigned char **usage_at, const unsigned char **usage_end) noexcept nogil:
    """An object from its ``{``; at the top level (``usage_at`` given) the last ``"usage"`` value's span."""
    cdef const unsigned char *key
    cdef const unsigned char *value
    cdef bint escaped, is_usage, closed = False
    if depth > _MOST_DEPTH:
        return NULL
    p = _ws(p + 1, end)
    if p < end and p[0] == 125:
        return p + 1
    while True:
        if p >= end or p[0] != 34:
            return NULL
        key = p
        escaped = False
        p = _string(p, end, &escaped)
        if p == NULL or (escaped and usage_at != NULL):     # a top-level key spelled with escapes: orjson reads it
            return NULL
        is_usage = usage_at != NULL and p - key == 7 and memcmp(key, <const char *>b'"usage"', 7) == 0
        p = _ws(p, end)
        if p >= end or p[0] != 58:
            return NULL
        value = _ws(p + 1, end)
        p = _value(value, end, depth)
        if p == NULL:
            return NULL
        if is_usage:
            usage_at[0] = value
            usage_end[0] = p
        p = _after_member(p, end, 125, &closed)
        if p == NULL or closed:
            return p


cdef bint _scan_reply(const unsigned char *s, Py_ssize_t n, const unsigned char **usage_at,
                      const unsigned char **usage_end) noexcept nogil:
    """Whether ``s[:n]`` is a JSON object in the subset (then ``usage_at``/``usage_end`` span its top-level
    ``usage`` value, ``usage_at`` NULL for none)."""
    cdef const unsigned char *end = s + n
    cdef const unsigned char *p = _ws(s, end)
    if p >= end or p[0] != 123:
        return False
    p = _object(p, end, 1, usage_at, usage_end)
    return p != NULL and _ws(p, end) == end


# ---------------------------------------------------------------- the usage the scan spanned

cdef object _UNSURE = object()      # a usage value this reader leaves to orjson
# the depth the reader skips values at: the scan has already held the whole span within _MOST_DEPTH
cdef enum:
    _SPANNED = 1


cdef object _span_usage(const unsigned char *p, const unsigned char *end):
    """``openai_reply_usage``'s answer from the ``usage`` value ``_scan_reply`` spanned (so valid JSON of
    the subset), read where it lies, or ``_UNSURE`` for a value with a key spelled with escapes
    (orjson reads those). The rules are ``openai_usage``'s, the last of a repeated key counting as
    in a dict: a count that is not an integer is 0, details that are not an object are none.
    Why: parsing it built a dict (two more for the details) to read four counts, and called
    ``openai_usage`` through Python, on every whole answer (some 3,000 instructions)."""
    cdef int64_t prompt = 0, completion = 0, cached = 0, reasoning = 0
    cdef const unsigned char *name
    cdef Py_ssize_t size
    cdef bint closed = False
    cdef int member
    if p >= end or p[0] != 123:
        return None                     # no object: no usage
    p = _ws(p + 1, end)
    if p < end and p[0] == 125:
        return None
    while True:
        p = _plain_key(p, end, &name, &size)
        if p == NULL:
            return _UNSURE
        member = _usage_member(name, size)
        if member == _PROMPT:
            p = _count_at(p, end, &prompt)
        elif member == _COMPLETION:
            p = _count_at(p, end, &completion)
        elif member == _PROMPT_DETAILS:
            p = _detail_at(p, end, b"cached_tokens", 13, &cached)
        elif member == _COMPLETION_DETAILS:
            p = _detail_at(p, end, b"reasoning_tokens", 16, &reasoning)
        else:
            p = _value(p, end, _SPANNED)
        if p == NULL:
            return _UNSURE
        p = _after_member(p, end, 125, &closed)
        if p == NULL:
            return _UNSURE
        if closed:
            break
    if prompt + completion == 0:
        return None                     # counts no token: the caller estimates
    return _normalized(prompt, completion, cached, reasoning)


cdef const unsigned char *_plain_key(const unsigned char *p, const unsigned char *end,
                                     const unsigned char **name, Py_ssize_t *size) noexcept nogil:
    """An object member's key at ``p`` (its opening quote) and its colon: the key without its quotes
    in ``name`` and ``size``, and where the value starts; NULL for a key spelled with escapes (orjson
    reads those) or for anything but a key and a colon."""
    cdef bint escaped = False
    cdef const unsigned char *key = p
    p = _string(p, end, &escaped)
    if p == NULL or escaped:
        return NULL
    name[0] = key + 1
    size[0] = p - key - 2
    p = _ws(p, end)
    if p >= end or p[0] != 58:
        return NULL
    return _ws(p + 1, end)


cdef enum:
    _OTHER = 0
    _PROMPT = 1
    _COMPLETION = 2
    _PROMPT_DETAILS = 3
    _COMPLETION_DETAILS = 4


cdef int _usage_member(const unsigned char *name, Py_ssize_t n) noexcept nogil:
    """Which of ``usage``'s members a key (without its quotes) names."""
    if n == 13 and memcmp(name, b"prompt_tokens", 13) == 0:
        return _PROMPT
    if n == 17 and memcmp(name, b"completion_tokens", 17) == 0:
        return _COMPLETION
    if n == 21 and memcmp(name, b"prompt_tokens_details", 21) == 0:
        return _PROMPT_DETAILS
    if n == 25 and memcmp(name, b"completion_tokens_details", 25) == 0:
        return _COMPLETION_DETAILS
    return _OTHER


cdef const unsigned char *_count_at(const unsigned char *p, const unsigned char *end,
                                    int64_t *count) noexcept nogil:
    """A member's value: an integer's in ``count`` (at most 18 digits: the scan's subset), anything
    else 0 (a float, a bool, null...); past the value, or NULL."""
    cdef const unsigned char *q = p
    cdef bint negative = False
    cdef int64_t n = 0
    count[0] = 0
    if q < end and q[0] == 45:
        negative = True
        q += 1
    if q >= end or not 48 <= q[0] <= 57:
        return _value(p, end, _SPANNED)
    while q < end and 48 <= q[0] <= 57:
        n = n * 10 + (q[0] - 48)
        q += 1
    if q < end and (q[0] == 46 or q[0] == 101 or q[0] == 69):   # . e E: a float
        return _number(p, end)
    count[0] = -n if negative else n
    return q


cdef const unsigned char *_detail_at(const unsigned char *p, const unsigned char *end, const char *name,
                                     Py_ssize_t size, int64_t *count) noexcept nogil:
    """A ``*_tokens_details`` value: ``name``'s count (``size`` bytes) when it is an object, else 0;
    past the value, or NULL (NULL too for a key spelled with escapes)."""
    cdef const unsigned char *key
    cdef Py_ssize_t key_size
    cdef bint closed = False
    count[0] = 0
    if p >= end or p[0] != 123:
        return _value(p, end, _SPANNED)
    p = _ws(p + 1, end)
    if p < end and p[0] == 125:
        return p + 1
    while True:
        p = _plain_key(p, end, &key, &key_size)
        if p == NULL:
            return NULL
        if key_size == size and memcmp(key, name, <size_t>size) == 0:
            p = _count_at(p, end, count)
        else:
            p = _value(p, end, _SPANNED)
        if p == NULL:
            return NULL
        p = _after_member(p, end, 125, &closed)
        if p == NULL or closed:
            return p


def reply_usage_span(bytes body not None):
    """``(start, end)`` of the top-level ``usage`` value of a reply the scan is sure of (``(-1, -1)``: it
    has none), or None when orjson must decide (outside the subset, or not JSON). What a format whose
    usage is not OpenAI's reads a whole reply's usage with (``formats.anthropic``), and what the tests
    hold to orjson."""
    cdef const unsigned char *s = <const unsigned char *>PyBytes_AS_STRING(body)
    cdef const unsigned char *usage_at = NULL
    cdef const unsigned char *usage_end = NULL
    if not _scan_reply(s, PyBytes_GET_SIZE(body), &usage_at, &usage_end):
        return None
    if usage_at == NULL:
        return (-1, -1)
    return (<Py_ssize_t>(usage_at - s), <Py_ssize_t>(usage_end - s))
