// The proxlet kit for JavaScript plugins. `plugin(hooks)` turns an object
// with the hooks a plugin writes into the four interfaces the `plugin` world
// exports, with no-op defaults for the rest; the other exports build edits,
// actions and responses.
//
//   import { plugin, setHeader } from './proxlet.js';
//   export const { lifecycle, requestHooks, responseHooks, errorHooks } = plugin({
//     onResponse(flow, request, response) { return [setHeader('x-hello', 'world')]; },
//   });
import { log as hostLog } from 'proxlet:plugin/host@0.2.1';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** UTF-8 bytes of a string; a Uint8Array as is. */
const bytes = (data) => (typeof data === 'string' ? encoder.encode(data) : data);
/** A field value as a string (undefined stays undefined). */
const text = (value) => value && decoder.decode(value);

/** Writes `message` to proxlet's log at `level` ('trace' … 'error'). */
export function log(message, level = 'info') {
  hostLog(level, String(message));
}

// Heads stay in the host and the handle dies with the hook call: each
// property below is one host call, made when read, so keep what a later
// call needs as a value (`const url = request.url`), not the head. The
// handle sits under a symbol, out of the plugin's way.
const handle = Symbol('handle');

/** Header fields, case-insensitive, values as strings. */
class Head {
  constructor(head) {
    this[handle] = head;
  }
  /** The first value of field `name`, or undefined. */
  header(name) {
    return text(this[handle].header(name));
  }
  /** Every value of field `name`, in order (cache-control, vary…). */
  headerAll(name) {
    return this[handle].headerAll(name).map(text);
  }
  /** Whether field `name` is there; copies no value. */
  hasHeader(name) {
    return this[handle].hasHeader(name);
  }
  /** Every visible field as [lowercase name, value], in order. */
  get headers() {
    return this[handle].headers().map(([name, value]) => [name, text(value)]);
  }
}

/** The request: `method`, `url`, `scheme`, `authority`, `path`, `client`,
 * and the header accessors. */
class RequestHead extends Head {
  get method() {
    return this[handle].method();
  }
  get url() {
    return this[handle].url();
  }
  get scheme() {
    return this[handle].scheme();
  }
  get authority() {
    return this[handle].authority();
  }
  get path() {
    return this[handle].path();
  }
  get client() {
    return this[handle].client();
  }
}

/** The upstream's response head: `status` and the header accessors. */
class ResponseHead extends Head {
  get status() {
    return this[handle].status();
  }
}

/** The world's exports from `hooks`: any of `init(config)` (the parsed
 * config; throw to refuse the load), `onRequest`, `onRequestBody`,
 * `onResponse`, `onResponseBody` and `onError`. Only the hooks given are
 * declared, so the host never calls the others. A request or response hook
 * returns an action, an array of edits, or nothing (go on unchanged). */
export function plugin(hooks) {
  const has = (name) => typeof hooks[name] === 'function';
  const goOn = (action) => {
    if (action === undefined) return { tag: 'continue', val: [] };
    return Array.isArray(action) ? { tag: 'continue', val: action } : action;
  };
  const bodyUnchanged = { tag: 'continue' };
  return {
    lifecycle: {
      init(config) {
        // The bindings turn a thrown Error into a trap, a returned `err`
        // into a refused load with its message.
        try {
          hooks.init?.(JSON.parse(config));
        } catch (e) {
          return { tag: 'err', val: String(e?.message ?? e) };
        }
        return {
          onRequest: has('onRequest'),
          onRequestBody: has('onRequestBody'),
          onResponse: has('onResponse'),
          onResponseBody: has('onResponseBody'),
          onError: has('onError'),
        };
      },
    },
    requestHooks: {
      onRequest: (flow, request) => goOn(hooks.onRequest?.(flow, new RequestHead(request))),
      onRequestBody: (flow, request, body) =>
        hooks.onRequestBody?.(flow, new RequestHead(request), body) ?? bodyUnchanged,
    },
    responseHooks: {
      onResponse: (flow, request, response) =>
        goOn(hooks.onResponse?.(flow, new RequestHead(request), new ResponseHead(response))),
      onResponseBody: (flow, request, response, body) =>
        hooks.onResponseBody?.(flow, new RequestHead(request), new ResponseHead(response), body) ??
        bodyUnchanged,
    },
    errorHooks: {
      onError: (flow, request, error) => hooks.onError?.(flow, new RequestHead(request), error),
    },
  };
}

// Edits: values are strings or Uint8Arrays.
export const setHeader = (name, value) => ({ tag: 'set-header', val: { name, value: bytes(value) } });
export const appendHeader = (name, value) => ({ tag: 'append-header', val: { name, value: bytes(value) } });
export const removeHeader = (name) => ({ tag: 'remove-header', val: name });
export const setMethod = (method) => ({ tag: 'set-method', val: method });
export const setUrl = (url) => ({ tag: 'set-url', val: url });
export const setAuthority = (authority) => ({ tag: 'set-authority', val: authority });
export const setPath = (path) => ({ tag: 'set-path', val: path });
export const setStatus = (status) => ({ tag: 'set-status', val: status });

/** A response (what `onError` returns): `body` a string, a Uint8Array or
 * `{ file: path }`; `headers` an object or [name, value] pairs. */
export function response(status, body = '', headers = {}) {
  const fields = Array.isArray(headers) ? headers : Object.entries(headers);
  return {
    status,
    headers: fields.map(([name, value]) => [name.toLowerCase(), bytes(value)]),
    body: body.file === undefined ? { tag: 'bytes', val: bytes(body) } : { tag: 'file', val: body.file },
  };
}

// Actions.
/** onRequest, onRequestBody: answer now with `response(status, body, headers)`. */
export const respond = (status, body, headers) => ({ tag: 'respond', val: response(status, body, headers) });
/** onRequest, onResponse: call the body hook next, after `edits`. */
export const needBody = (edits = []) => ({ tag: 'need-body', val: edits });
/** Body hooks: these bytes (or string) instead; onResponse: this `response(…)` instead. */
export const replace = (body) => ({
  tag: 'replace',
  val: typeof body === 'object' && 'status' in body ? body : bytes(body),
});
/** onRequest: wait `ms`, then go on after `edits`. */
export const delay = (ms, edits = []) => ({ tag: 'delay', val: { ms, edits } });
/** onRequest: go on as the only flow fetching `key`. */
export const fill = (key, edits = []) => ({ tag: 'fill', val: { key, edits } });
/** onResponse: stream on and store the body at `path`; `sidecar` is
 * `{ path, contents }` written after it. */
export const store = (path, edits = [], sidecar = undefined) => ({
  tag: 'store',
  val: { path, edits, sidecar: sidecar && { path: sidecar.path, contents: bytes(sidecar.contents) } },
});
