"""A mitmproxy-style layer over the generated proxlet bindings.

Write a class with any of `request(flow)`, `responseheaders(flow)`,
`response(flow)` and `error(flow)`, then export it:

    from proxlet_addon import Addon, export

    class MyAddon(Addon):
        def response(self, flow):
            flow.response.text = flow.response.text.replace("the", "teh")

    Lifecycle, RequestHooks, ResponseHooks, ErrorHooks = export(MyAddon)

`configure(config)` gets the plugin's `config` table (a dict). `response`
sees the decoded body; limit which flows are buffered with
`wants_response(flow)`. In `request`, `responseheaders` or `error`, set
`flow.response = Response.make(...)` to answer with your own response.

The heads stay in proxlet: `flow.request.url`, `.headers["accept"]`,
`flow.response.status_code` and the rest ask the host when first read and
keep the answer for the rest of the hook, and what a hook changes goes back
as a list of edits. A hook that reads and changes nothing costs almost
nothing. A flow is valid only during the hook it was passed to.
"""

import json
import weakref

import componentize_py_runtime
from componentize_py_types import Err
from wit_world.imports import host, types


class _InertFinalizer:
    """What a borrowed head gets instead of a `weakref.finalize`."""

    __slots__ = ()
    # componentize-py calls `detach()` when the borrow ends; nothing to undo.
    detach = staticmethod(tuple)


def _no_finalizers_for_heads():
    """componentize-py gives every resource it passes into Python a
    `weakref.finalize` (a Python object, a weak reference and a registry
    entry) and detaches it again when the call returns. The heads are the
    only resources world `plugin` hands to a guest, always borrowed for one
    call and released by componentize-py itself when it returns, so those
    finalizers can never run: making and detaching them was about half the
    cost of an empty hook call. Here a head's finalizer is one shared inert
    object; every other `weakref.finalize` (a plugin's own, or one for a
    resource type a later WIT may add) is made as before."""
    heads = (types.RequestHead, types.ResponseHead)
    drop = componentize_py_runtime.drop_resource
    inert = _InertFinalizer()
    finalize = weakref.finalize
    make = object.__new__

    def __new__(cls, obj=None, func=None, /, *args, **kwargs):
        if func is drop and obj.__class__ in heads:
            return inert  # not a `finalize`, so `__init__` is skipped
        return make(cls)

    finalize.__new__ = __new__


_no_finalizers_for_heads()
_new = object.__new__


def log(message, level=types.Level.INFO):
    """Writes to proxlet's log, tagged with the plugin name."""
    host.log(level, str(message))


def _text(value):
    """A header value as str; bytes are read as latin-1 so every byte survives."""
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _without(fields, name):
    return [(n, v) for n, v in fields if n != name]


def _replay(fields, edits):
    """`fields` after the header edits among `edits`, as proxlet will apply them."""
    for edit in edits:
        if isinstance(edit, types.Edit_SetHeader):
            field = edit.value
            fields = _without(fields, field.name) + [(field.name, _text(field.value))]
        elif isinstance(edit, types.Edit_AppendHeader):
            fields = fields + [(edit.value.name, _text(edit.value.value))]
        elif isinstance(edit, types.Edit_RemoveHeader):
            fields = _without(fields, edit.value)
    return fields


class Headers:
    """Header fields, case-insensitive, in order; values are str.

    Over a head in proxlet, a name is asked for only when first read, and
    every change is also recorded as an edit for the host."""

    __slots__ = ("_fields", "_head", "_first", "_edits")

    def __init__(self, fields=()):
        pairs = fields.items() if hasattr(fields, "items") else fields
        self._fields = [(n.lower(), _text(v)) for n, v in pairs]
        self._head = None
        self._first = {}
        self._edits = []

    def get(self, name, default=None):
        """The first value of `name`: one host call the first time, unless
        every field was already read."""
        name = name.lower()
        if self._fields is not None:
            return next((v for n, v in self._fields if n == name), default)
        first = self._first
        if name not in first:
            value = self._head.header(name)  # bytes or None
            first[name] = None if value is None else value.decode("latin-1")
        value = first[name]
        return default if value is None else value

    def get_all(self, name):
        """Every value of `name` (e.g. `set-cookie`), in order."""
        name = name.lower()
        return [v for n, v in self.fields if n == name]

    @property
    def fields(self):
        """Every field as a (name, value) pair; one host call the first time."""
        if self._fields is None:
            fields = [(n, _text(v)) for n, v in self._head.headers()]
            self._fields = _replay(fields, self._edits)
        return tuple(self._fields)

    def __getitem__(self, name):
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name, value):
        name, value = name.lower(), _text(value)
        self._first[name] = value
        self._change(types.Edit_SetHeader(types.Field(name, value.encode("latin-1"))))

    def __delitem__(self, name):
        name = name.lower()
        self._first[name] = None
        self._change(types.Edit_RemoveHeader(name))

    def __contains__(self, name):
        return self.get(name) is not None

    def add(self, name, value):
        """Appends a field, keeping the others of that name."""
        name, value = name.lower(), _text(value)
        if self.get(name) is None:
            self._first[name] = value
        self._change(types.Edit_AppendHeader(types.Field(name, value.encode("latin-1"))))

    def _change(self, edit):
        self._edits.append(edit)
        if self._fields is not None:
            self._fields = _replay(self._fields, [edit])

    def _replace(self, fields):
        """Makes these the only fields: removes every present name, adds the new."""
        new = Headers(fields).fields
        for name in dict.fromkeys(n for n, _ in self.fields):
            del self[name]
        for name, value in new:
            self.add(name, value)

    def _wit(self):
        return [(n, v.encode("latin-1")) for n, v in self.fields]


class _Message:
    """What requests and responses share: headers you read and replace.
    Over a head in proxlet, the `Headers` object is made when first used."""

    __slots__ = ()

    @property
    def headers(self):
        headers = self._headers
        if headers is None:
            # Made here, not in a method: this is on every flow's path.
            headers = self._headers = _new(Headers)
            headers._fields = None
            headers._head = self._head
            headers._first = {}
            headers._edits = self._edits
        return headers

    @headers.setter
    def headers(self, fields):
        self.headers._replace(fields)


def _split_url(url):
    """An absolute URL's parts, as proxlet's `scheme()`, `authority()` and
    `path()` give them."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not an absolute URL: {url!r}")
    end = next((i for i, c in enumerate(rest) if c in "/?"), len(rest))
    path = rest[end:]
    return {
        "url": url,
        "scheme": scheme,
        "authority": rest[:end],
        "path": path if path.startswith("/") else "/" + path,
    }


class Request(_Message):
    """The request in proxlet: each part asked for when first read; setting
    `method`, `url`, `authority` or `path` becomes an edit."""

    __slots__ = ("_head", "_read", "_edits", "_headers")

    def __init__(self, head):
        self._head = head
        self._read = {}
        self._edits = []
        self._headers = None

    def _get(self, part):
        if part not in self._read:
            self._read[part] = getattr(self._head, part)()
        return self._read[part]

    @property
    def method(self):
        return self._get("method")

    @method.setter
    def method(self, value):
        self._read["method"] = value
        self._edits.append(types.Edit_SetMethod(value))

    @property
    def url(self):
        """Absolute URL: scheme, authority, path and query."""
        return self._get("url")

    @url.setter
    def url(self, value):
        self._read.update(_split_url(value))
        self._edits.append(types.Edit_SetUrl(value))

    @property
    def scheme(self):
        return self._get("scheme")

    @property
    def authority(self):
        """Host and port as in the URL, e.g. "example.com:8443"."""
        return self._get("authority")

    @authority.setter
    def authority(self, value):
        # Built from the whole URL so `url` and `path` read back in step.
        parts = _split_url(self.url)
        self._read.update(_split_url(f"{parts['scheme']}://{value}{parts['path']}"))
        self._edits.append(types.Edit_SetAuthority(value))

    @property
    def host(self):
        """The authority without its port ("[::1]" for IPv6)."""
        authority = self.authority
        return authority if authority.endswith("]") else authority.rsplit(":", 1)[0]

    @property
    def path(self):
        """Path and query, e.g. "/simple/pip/?x=1"."""
        return self._get("path")

    @path.setter
    def path(self, value):
        parts = _split_url(self.url)
        self._read.update(_split_url(f"{parts['scheme']}://{parts['authority']}{value}"))
        self._edits.append(types.Edit_SetPath(value))

    @property
    def client(self):
        """The client's address, e.g. "127.0.0.1:50412"."""
        return self._get("client")


class Response(_Message):
    """A response you make (`Response.make`), or proxlet's, whose status and
    headers are asked for when first read; changing them becomes an edit."""

    __slots__ = ("_head", "_status", "_edits", "_headers", "content")

    def __init__(self, status_code=200, content=b"", headers=()):
        self._head = None
        self._status = status_code
        self._edits = []
        self._headers = Headers(headers)
        self.content = content.encode() if isinstance(content, str) else content

    @classmethod
    def make(cls, status_code=200, content=b"", headers=()):
        """A response to answer with; `content` may be str (sent as UTF-8),
        `headers` a dict or (name, value) pairs."""
        return cls(status_code, content, headers)

    @property
    def status_code(self):
        if self._status is None:
            self._status = self._head.status()
        return self._status

    @status_code.setter
    def status_code(self, value):
        self._status = value
        self._edits.append(types.Edit_SetStatus(value))

    @property
    def text(self):
        return self.content.decode("utf-8", "replace")

    @text.setter
    def text(self, value):
        self.content = value.encode()

    def json(self):
        return json.loads(self.content)

    def _wit(self):
        body = types.Body_Bytes(self.content)
        return types.Response(self.status_code, self.headers._wit(), body)


def _response_over(head, content=b""):
    """proxlet's response head as a `Response`, read lazily."""
    response = _new(Response)
    response._head = head
    response._status = None
    response._edits = []
    response._headers = None
    response.content = content
    return response


class Flow:
    """One hook's view of a flow; `error` is the upstream failure's message."""

    def __init__(self, info, request, response=None, error=None):
        self.id = info.id
        self.intercepted_tls = info.intercepted_tls
        # The host's request head until `request` is first read.
        self._request = request
        self.response = response
        self.error = error

    @property
    def request(self):
        request = self._request
        if not isinstance(request, Request):
            request = self._request = Request(request)
        return request

    @request.setter
    def request(self, value):
        self._request = value

    @property
    def client(self):
        """The client's address, e.g. "127.0.0.1:50412"."""
        return self.request.client


class Addon:
    """Base class; override the hooks you need."""

    def configure(self, config):
        pass

    def wants_response(self, flow):
        return True


def _overrides(cls, name):
    return getattr(cls, name, None) is not getattr(Addon, name, None)


def export(cls):
    """The four export classes componentize-py looks for, bound to one
    instance of `cls` per component instance."""
    addon = cls()
    # Decided once: the hooks run per flow, and every step there counts.
    has_headers_hook = _overrides(cls, "responseheaders")
    has_body_hook = _overrides(cls, "response")
    hooks = types.Hooks(0)
    if _overrides(cls, "request"):
        hooks |= types.Hooks.ON_REQUEST
    if has_headers_hook or has_body_hook:
        hooks |= types.Hooks.ON_RESPONSE
    if has_body_hook:
        hooks |= types.Hooks.ON_RESPONSE_BODY
    if _overrides(cls, "error"):
        hooks |= types.Hooks.ON_ERROR
    wants_response = addon.wants_response
    continue_response = types.ResponseAction_Continue
    # What most calls return: made once, as nothing mutates them.
    request_unchanged = types.RequestAction_Continue([])
    response_unchanged = types.ResponseAction_Continue([])

    class Lifecycle:
        def init(self, config):
            try:
                addon.configure(json.loads(config))
            except Exception as e:
                raise Err(f"{cls.__name__}.configure: {e}")
            return hooks

    class RequestHooks:
        def on_request(self, info, request):
            flow = Flow(info, request)
            addon.request(flow)
            if flow.response is not None:
                return types.RequestAction_Respond(flow.response._wit())
            request = flow._request
            if not isinstance(request, Request) or not request._edits:
                return request_unchanged
            return types.RequestAction_Continue(request._edits)

        def on_request_body(self, info, request, body):
            return types.RequestBodyAction_Continue()

    class ResponseHooks:
        def on_response(self, info, request, response):
            # `Flow(info, request, _response_over(response))`, inlined:
            # this runs for every response, and the two calls it saves
            # were ~1 µs of a ~31 µs call (bench/micro.sh).
            head = response
            response = _new(Response)
            response._head = head
            response._status = None
            response._edits = []
            response._headers = None
            response.content = b""
            flow = _new(Flow)
            flow.id = info.id
            flow.intercepted_tls = info.intercepted_tls
            flow._request = request
            flow.response = response
            flow.error = None
            if has_headers_hook:
                addon.responseheaders(flow)
            if flow.response._head is None:
                return types.ResponseAction_Replace(flow.response._wit())
            edits = flow.response._edits
            if has_body_hook and wants_response(flow):
                return types.ResponseAction_NeedBody(edits)
            return continue_response(edits) if edits else response_unchanged

        def on_response_body(self, info, request, response, body):
            flow = Flow(info, request, _response_over(response, body))
            addon.response(flow)
            if flow.response._edits or flow.response._head is None:
                # on-response-body can only replace the body.
                log(
                    "response(): status and header changes are dropped; "
                    "make them in responseheaders()",
                    types.Level.WARN,
                )
            if flow.response.content == body:
                return types.ResponseBodyAction_Continue()
            return types.ResponseBodyAction_Replace(flow.response.content)

    class ErrorHooks:
        def on_error(self, info, request, error):
            flow = Flow(info, request, error=error.message)
            addon.error(flow)
            if flow.response is None:
                return None
            return flow.response._wit()

    return Lifecycle, RequestHooks, ResponseHooks, ErrorHooks
