// A proxlet plugin in JavaScript: sets one field in JSON responses.
// Config: { field = "name", value = ... }.
import { log, needBody, plugin, replace } from './proxlet.js';

let config = {};

export const { lifecycle, requestHooks, responseHooks, errorHooks } = plugin({
  init(settings) {
    config = settings;
  },

  onResponse(flow, request, response) {
    if (response.header('content-type')?.includes('json')) return needBody();
  },

  onResponseBody(flow, request, response, body) {
    const data = JSON.parse(new TextDecoder().decode(body));
    data[config.field ?? 'proxlet'] = config.value ?? 'js was here';
    log(`set field in ${request.url}`);
    return replace(JSON.stringify(data));
  },
});
