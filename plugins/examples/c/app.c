// A proxlet plugin in C: answers matching requests with an injected error,
// to see how a page or a client copes with a failing API.
// Config: { match = "/api/", status = 503 } (defaults: "/inject-error", 503).
#define PROXLET_HOOKS PROXLET_PLUGIN_TYPES_HOOKS_ON_REQUEST
#include "proxlet.h"

static char *match = NULL;
static uint16_t status = 503;

bool init(const char *config, char **error) {
  free(match);
  match = proxlet_config_string(config, "match");
  if (!match) match = strdup("/inject-error");
  long code = proxlet_config_int(config, "status", 503);
  if (code < 100 || code > 999) {
    *error = strdup("status must be 100-999");
    return false;
  }
  status = (uint16_t)code;
  return true;
}

void on_request(const proxlet_flow_t *flow, proxlet_request_head_t request, proxlet_request_action_t *ret) {
  char *url = proxlet_url(request);
  if (!strstr(url, match)) {
    free(url);
    return;
  }
  // snprintf would pull in WASI's stdio imports; three digits do not need it.
  char code[4] = {'0' + status / 100, '0' + status / 10 % 10, '0' + status % 10, '\0'};
  char *text = proxlet_concat("injected ", code, " by the c example for ", url, "\n", NULL);
  free(url);
  proxlet_log(PROXLET_PLUGIN_TYPES_LEVEL_INFO, text);
  ret->tag = PROXLET_PLUGIN_TYPES_REQUEST_ACTION_RESPOND;
  ret->val.respond = proxlet_response(status, "text/plain", text);
  free(text);
}
