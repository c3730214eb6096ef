// A proxlet plugin in C: answers matching requests with an injected error,
// to see how a page or a client copes with a failing API.
// Config: { match = "/api/", status = 503 } (defaults: "/inject-error", 503).
#include <stdlib.h>
#include <string.h>

#include "gen/plugin.h"

static char *match = NULL;
static uint16_t status = 503;

// The text after `"key":` in a flat JSON object, or NULL.
static const char *json_value(const char *json, const char *key) {
  size_t len = strlen(key);
  for (const char *p = strchr(json, '"'); p; p = strchr(p + 1, '"')) {
    if (strncmp(p + 1, key, len) == 0 && p[len + 1] == '"') {
      const char *v = p + len + 2;
      while (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r') v++;
      if (*v != ':') continue;
      v++;
      while (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r') v++;
      return v;
    }
  }
  return NULL;
}

// A JSON string value (escapes \" and \\ only) as a new C string, or NULL.
static char *json_string(const char *v) {
  if (!v || *v != '"') return NULL;
  char *out = malloc(strlen(v));
  size_t n = 0;
  for (v++; *v && *v != '"'; v++) {
    if (*v == '\\' && v[1]) v++;
    out[n++] = *v;
  }
  out[n] = '\0';
  return out;
}

static void bytes_dup(plugin_list_u8_t *ret, const char *text) {
  ret->len = strlen(text);
  ret->ptr = malloc(ret->len);
  memcpy(ret->ptr, text, ret->len);
}

static void log_line(proxlet_plugin_host_level_t level, const char *text) {
  plugin_string_t message;
  plugin_string_set(&message, text);
  proxlet_plugin_host_log(level, &message);
}

bool exports_proxlet_plugin_lifecycle_init(plugin_string_t *config,
                                           exports_proxlet_plugin_lifecycle_hooks_t *ret,
                                           plugin_string_t *err) {
  char *json = strndup((const char *)config->ptr, config->len);
  plugin_string_free(config);
  free(match);
  match = json_string(json_value(json, "match"));
  if (!match) match = strdup("/inject-error");
  const char *code = json_value(json, "status");
  status = code ? (uint16_t)atoi(code) : 503;
  free(json);
  if (status < 100 || status > 999) {
    plugin_string_dup(err, "status must be 100-999");
    return false;
  }
  *ret = PROXLET_PLUGIN_TYPES_HOOKS_ON_REQUEST;
  return true;
}

void exports_proxlet_plugin_request_hooks_on_request(
    exports_proxlet_plugin_request_hooks_flow_info_t *flow,
    exports_proxlet_plugin_request_hooks_request_head_t *head,
    exports_proxlet_plugin_request_hooks_request_action_t *ret) {
  char *url = strndup((const char *)head->url.ptr, head->url.len);
  exports_proxlet_plugin_request_hooks_flow_info_free(flow);
  exports_proxlet_plugin_request_hooks_request_head_free(head);
  if (!strstr(url, match)) {
    free(url);
    ret->tag = PROXLET_PLUGIN_TYPES_REQUEST_ACTION_CONTINUE;
    ret->val.continue_.is_some = false;
    return;
  }
  char code[4] = {'0' + status / 100, '0' + status / 10 % 10, '0' + status % 10, '\0'};
  const char *parts[] = {"injected ", code, " by the c example for ", url, "\n"};
  size_t len = 1;
  for (size_t i = 0; i < 5; i++) len += strlen(parts[i]);
  char *text = malloc(len);
  text[0] = '\0';
  for (size_t i = 0; i < 5; i++) strcat(text, parts[i]);
  free(url);
  log_line(PROXLET_PLUGIN_TYPES_LEVEL_INFO, text);

  proxlet_plugin_types_response_t *response = &ret->val.respond;
  ret->tag = PROXLET_PLUGIN_TYPES_REQUEST_ACTION_RESPOND;
  response->head.status = status;
  response->head.headers.len = 1;
  response->head.headers.ptr = malloc(sizeof(plugin_tuple2_string_list_u8_t));
  plugin_string_dup(&response->head.headers.ptr[0].f0, "content-type");
  bytes_dup(&response->head.headers.ptr[0].f1, "text/plain");
  response->body.tag = PROXLET_PLUGIN_TYPES_BODY_BYTES;
  bytes_dup(&response->body.val.bytes, text);
  free(text);
}

// The hooks below are not declared in `init`, so the host never calls them;
// the world still needs them defined.
void exports_proxlet_plugin_request_hooks_on_request_body(
    exports_proxlet_plugin_request_hooks_flow_info_t *flow,
    exports_proxlet_plugin_request_hooks_request_head_t *head, plugin_list_u8_t *body,
    exports_proxlet_plugin_request_hooks_request_body_action_t *ret) {
  exports_proxlet_plugin_request_hooks_flow_info_free(flow);
  exports_proxlet_plugin_request_hooks_request_head_free(head);
  plugin_list_u8_free(body);
  ret->tag = PROXLET_PLUGIN_TYPES_REQUEST_BODY_ACTION_CONTINUE;
}

void exports_proxlet_plugin_response_hooks_on_response(
    exports_proxlet_plugin_response_hooks_flow_info_t *flow,
    exports_proxlet_plugin_response_hooks_request_head_t *request,
    exports_proxlet_plugin_response_hooks_response_head_t *response,
    exports_proxlet_plugin_response_hooks_response_action_t *ret) {
  exports_proxlet_plugin_response_hooks_flow_info_free(flow);
  exports_proxlet_plugin_response_hooks_request_head_free(request);
  exports_proxlet_plugin_response_hooks_response_head_free(response);
  ret->tag = PROXLET_PLUGIN_TYPES_RESPONSE_ACTION_CONTINUE;
  ret->val.continue_.is_some = false;
}

void exports_proxlet_plugin_response_hooks_on_response_body(
    exports_proxlet_plugin_response_hooks_flow_info_t *flow,
    exports_proxlet_plugin_response_hooks_request_head_t *request,
    exports_proxlet_plugin_response_hooks_response_head_t *response, plugin_list_u8_t *body,
    exports_proxlet_plugin_response_hooks_response_body_action_t *ret) {
  exports_proxlet_plugin_response_hooks_flow_info_free(flow);
  exports_proxlet_plugin_response_hooks_request_head_free(request);
  exports_proxlet_plugin_response_hooks_response_head_free(response);
  plugin_list_u8_free(body);
  ret->tag = PROXLET_PLUGIN_TYPES_RESPONSE_BODY_ACTION_CONTINUE;
}

bool exports_proxlet_plugin_error_hooks_on_error(
    exports_proxlet_plugin_error_hooks_flow_info_t *flow,
    exports_proxlet_plugin_error_hooks_request_head_t *request,
    exports_proxlet_plugin_error_hooks_upstream_error_t *error,
    exports_proxlet_plugin_error_hooks_response_t *ret) {
  exports_proxlet_plugin_error_hooks_flow_info_free(flow);
  exports_proxlet_plugin_error_hooks_request_head_free(request);
  exports_proxlet_plugin_error_hooks_upstream_error_free(error);
  (void)ret;
  return false;
}
