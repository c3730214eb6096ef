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
`wants_response(flow)`. In `request`, set `flow.response = Response(...)` to
answer without the upstream.
"""

import json

from componentize_py_types import Err
from wit_world.imports import host, types


def log(message, level=types.Level.INFO):
    """Writes to proxlet's log, tagged with the plugin name."""
    host.log(level, str(message))


class Headers:
    """Header fields, case-insensitive, in order; values are str."""

    def __init__(self, fields):
        self.fields = [(name, value.decode("latin-1")) for name, value in fields]

    def get(self, name, default=None):
        name = name.lower()
        return next((v for n, v in self.fields if n == name), default)

    def __getitem__(self, name):
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name, value):
        del self[name]
        self.fields.append((name.lower(), str(value)))

    def __delitem__(self, name):
        self.fields = [(n, v) for n, v in self.fields if n != name.lower()]

    def __contains__(self, name):
        return self.get(name) is not None

    def wit(self):
        return [(n, v.encode("latin-1")) for n, v in self.fields]


class Request:
    def __init__(self, head):
        self.method = head.method
        self.url = head.url
        self.headers = Headers(head.headers)

    @property
    def host(self):
        authority = self.url.split("://", 1)[-1].split("/", 1)[0]
        return authority.rsplit(":", 1)[0] if not authority.endswith("]") else authority

    @property
    def path(self):
        rest = self.url.split("://", 1)[-1]
        return "/" + rest.split("/", 1)[1] if "/" in rest else "/"

    def wit(self):
        return types.RequestHead(self.method, self.url, self.headers.wit())


class Response:
    def __init__(self, status_code=200, content=b"", headers=()):
        self.status_code = status_code
        self.headers = Headers([(n.lower(), v.encode("latin-1")) for n, v in headers])
        self.content = content

    @classmethod
    def make(cls, status_code=200, content=b"", headers=None):
        if isinstance(content, str):
            content = content.encode()
        return cls(status_code, content, list((headers or {}).items()))

    @property
    def text(self):
        return self.content.decode("utf-8", "replace")

    @text.setter
    def text(self, value):
        self.content = value.encode()

    def json(self):
        return json.loads(self.content)

    def head(self):
        return types.ResponseHead(self.status_code, self.headers.wit())


class Flow:
    def __init__(self, info, request, response=None, error=None):
        self.id = info.id
        self.client = info.client
        self.request = request
        self.response = response
        self.error = error


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
    hooks = types.Hooks(0)
    if _overrides(cls, "request"):
        hooks |= types.Hooks.ON_REQUEST
    if _overrides(cls, "responseheaders") or _overrides(cls, "response"):
        hooks |= types.Hooks.ON_RESPONSE
    if _overrides(cls, "response"):
        hooks |= types.Hooks.ON_RESPONSE_BODY
    if _overrides(cls, "error"):
        hooks |= types.Hooks.ON_ERROR

    class Lifecycle:
        def init(self, config):
            try:
                addon.configure(json.loads(config))
            except Exception as e:
                raise Err(f"{cls.__name__}.configure: {e}")
            return hooks

    class RequestHooks:
        def on_request(self, info, head):
            flow = Flow(info, Request(head))
            addon.request(flow)
            if flow.response is not None:
                r = flow.response
                return types.RequestAction_Respond(types.Response(r.head(), types.Body_Bytes(r.content)))
            return types.RequestAction_Continue(flow.request.wit())

        def on_request_body(self, info, head, body):
            return types.RequestBodyAction_Continue()

    class ResponseHooks:
        def on_response(self, info, request, head):
            flow = Flow(info, Request(request), Response(head.status, b"", []))
            flow.response.headers = Headers(head.headers)
            if _overrides(cls, "responseheaders"):
                addon.responseheaders(flow)
            edited = flow.response.head()
            if _overrides(cls, "response") and addon.wants_response(flow):
                return types.ResponseAction_NeedBody(edited)
            return types.ResponseAction_Continue(edited)

        def on_response_body(self, info, request, head, body):
            flow = Flow(info, Request(request), Response(head.status, body, []))
            flow.response.headers = Headers(head.headers)
            addon.response(flow)
            if flow.response.content == body:
                return types.ResponseBodyAction_Continue()
            return types.ResponseBodyAction_Replace(flow.response.content)

    class ErrorHooks:
        def on_error(self, info, request, error):
            flow = Flow(info, Request(request), error=error.message)
            addon.error(flow)
            if flow.response is None:
                return None
            r = flow.response
            return types.Response(r.head(), types.Body_Bytes(r.content))

    return Lifecycle, RequestHooks, ResponseHooks, ErrorHooks
