// A proxlet plugin in JavaScript: sets one field in JSON responses.
// Config: { field = "name", value = ... }.
import { log } from 'proxlet:plugin/host@0.1.0';

let config = {};

export const lifecycle = {
  init(text) {
    config = JSON.parse(text);
    return { onResponse: true, onResponseBody: true };
  },
};

export const requestHooks = {
  onRequest(flow, head) { return { tag: "continue", val: undefined }; },
  onRequestBody(flow, head, body) { return { tag: 'continue' }; },
};

export const responseHooks = {
  onResponse(flow, request, response) {
    const type = response.headers.find(([n]) => n === 'content-type');
    const isJson = type && new TextDecoder().decode(type[1]).includes('json');
    return isJson ? { tag: 'need-body', val: undefined } : { tag: 'continue', val: undefined };
  },
  onResponseBody(flow, request, response, body) {
    const data = JSON.parse(new TextDecoder().decode(body));
    data[config.field ?? 'proxlet'] = config.value ?? 'js was here';
    log('info', `set field in ${request.url}`);
    return { tag: 'replace', val: new TextEncoder().encode(JSON.stringify(data)) };
  },
};

export const errorHooks = {
  onError(flow, request, error) { return undefined; },
};
