"""Rewrites one field of JSON responses from one host, e.g. to flip a
feature flag an API returns:

    [[plugin]]
    name = "json-field"
    path = "plugins/examples/python/json-field.wasm"
    config = { host = "api.example.com", field = "beta", value = true }
"""

import json

from proxlet_addon import Addon, export, log


class JsonField(Addon):
    def configure(self, config):
        self.host = config.get("host")
        self.field = config.get("field", "proxlet")
        self.value = config.get("value", "was here")

    def wants_response(self, flow):
        kind = flow.response.headers.get("content-type", "")
        return (self.host is None or flow.request.host == self.host) and "json" in kind

    def response(self, flow):
        data = flow.response.json()
        if isinstance(data, dict):
            data[self.field] = self.value
            flow.response.text = json.dumps(data)
            log(f"set {self.field} in {flow.request.url}")


Lifecycle, RequestHooks, ResponseHooks, ErrorHooks = export(JsonField)
