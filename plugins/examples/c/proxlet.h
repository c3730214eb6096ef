// proxlet.h: the kit for proxlet plugins in C, over the bindings wit-bindgen
// writes to gen/plugin.h. It owns the exports: define PROXLET_HOOKS to the
// hooks you write, include this file, and write `init` and those hooks with
// the signatures at the end; the other hooks are no-ops the host never calls.
//
//   #define PROXLET_HOOKS PROXLET_PLUGIN_TYPES_HOOKS_ON_RESPONSE
//   #include "proxlet.h"
//   bool init(const char *config, char **error) { return true; }
//   void on_response(const proxlet_flow_t *flow, proxlet_request_head_t request,
//                    proxlet_response_head_t response, proxlet_response_action_t *ret) {
//     proxlet_set_header(&ret->val.continue_, "x-hello", "world");
//   }
//
// Memory: every string the readers return is malloc'd (free it); whatever a
// hook puts in `*ret` must be malloc'd too (the helpers below do that), and
// the bindings free it once the host copied it. The kit drops the heads and
// frees the other arguments after each hook, except a body, which is the
// hook's: free it with plugin_list_u8_free or hand it back in `replace`.
// Include this file in one .c file with PROXLET_HOOKS defined; other files
// may include it without, for the helpers.
#ifndef PROXLET_H
#define PROXLET_H

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "gen/plugin.h"

typedef proxlet_plugin_types_flow_info_t proxlet_flow_t;
typedef proxlet_plugin_types_borrow_request_head_t proxlet_request_head_t;
typedef proxlet_plugin_types_borrow_response_head_t proxlet_response_head_t;
typedef proxlet_plugin_types_upstream_error_t proxlet_upstream_error_t;
typedef proxlet_plugin_types_edit_t proxlet_edit_t;
typedef proxlet_plugin_types_list_edit_t proxlet_edits_t;
typedef proxlet_plugin_types_headers_t proxlet_headers_t;
typedef proxlet_plugin_types_response_t proxlet_response_t;
typedef proxlet_plugin_types_request_action_t proxlet_request_action_t;
typedef proxlet_plugin_types_request_body_action_t proxlet_request_body_action_t;
typedef proxlet_plugin_types_response_action_t proxlet_response_action_t;
typedef proxlet_plugin_types_response_body_action_t proxlet_response_body_action_t;

// realloc that aborts: in wasm a NULL result would not fault, it would
// write over address 0.
static inline void *proxlet_realloc(void *ptr, size_t size) {
  void *grown = realloc(ptr, size);
  if (!grown) abort();
  return grown;
}

// A NUL-terminated copy of `len` bytes.
static inline char *proxlet_strndup(const uint8_t *ptr, size_t len) {
  char *text = proxlet_realloc(NULL, len + 1);
  memcpy(text, ptr, len);
  text[len] = '\0';
  return text;
}

// A binding string as a C string; frees the binding string.
static inline char *proxlet_take_string(plugin_string_t *s) {
  char *text = proxlet_strndup(s->ptr, s->len);
  plugin_string_free(s);
  return text;
}

// Reading the request: one host call each, as malloc'd C strings.
#define PROXLET_REQUEST_READER(part)                                    \
  static inline char *proxlet_##part(proxlet_request_head_t request) { \
    plugin_string_t s;                                                  \
    proxlet_plugin_types_method_request_head_##part(request, &s);      \
    return proxlet_take_string(&s);                                     \
  }
PROXLET_REQUEST_READER(method)
PROXLET_REQUEST_READER(url)
PROXLET_REQUEST_READER(scheme)
PROXLET_REQUEST_READER(authority)
PROXLET_REQUEST_READER(path)
PROXLET_REQUEST_READER(client)
#undef PROXLET_REQUEST_READER

static inline uint16_t proxlet_status(proxlet_response_head_t response) {
  return proxlet_plugin_types_method_response_head_status(response);
}

// Frees a NULL-terminated array of strings and the strings.
static inline void proxlet_free_strings(char **texts) {
  for (char **t = texts; *t; t++) free(*t);
  free(texts);
}

// Header fields of either head, one host call each:
//   char *proxlet_request_header(request, name): the first value, or NULL
//     when absent or hidden;
//   char **proxlet_request_header_all(request, name): every value, in order,
//     NULL-terminated (free with proxlet_free_strings);
//   bool proxlet_request_has_header(request, name): copies no value;
// and the same for proxlet_response_*.
#define PROXLET_HEADER_READERS(kind)                                                                \
  static inline char *proxlet_##kind##_header(proxlet_##kind##_head_t head, const char *name) {     \
    plugin_string_t field;                                                                          \
    plugin_string_set(&field, name);                                                                \
    plugin_list_u8_t value;                                                                         \
    if (!proxlet_plugin_types_method_##kind##_head_header(head, &field, &value)) return NULL;       \
    char *text = proxlet_strndup(value.ptr, value.len);                                             \
    plugin_list_u8_free(&value);                                                                    \
    return text;                                                                                    \
  }                                                                                                 \
  static inline char **proxlet_##kind##_header_all(proxlet_##kind##_head_t head, const char *name) { \
    plugin_string_t field;                                                                          \
    plugin_string_set(&field, name);                                                                \
    plugin_list_list_u8_t values;                                                                   \
    proxlet_plugin_types_method_##kind##_head_header_all(head, &field, &values);                    \
    char **texts = proxlet_realloc(NULL, (values.len + 1) * sizeof *texts);                         \
    for (size_t i = 0; i < values.len; i++)                                                         \
      texts[i] = proxlet_strndup(values.ptr[i].ptr, values.ptr[i].len);                             \
    texts[values.len] = NULL;                                                                       \
    plugin_list_list_u8_free(&values);                                                              \
    return texts;                                                                                   \
  }                                                                                                 \
  static inline bool proxlet_##kind##_has_header(proxlet_##kind##_head_t head, const char *name) {  \
    plugin_string_t field;                                                                          \
    plugin_string_set(&field, name);                                                                \
    return proxlet_plugin_types_method_##kind##_head_has_header(head, &field);                      \
  }
PROXLET_HEADER_READERS(request)
PROXLET_HEADER_READERS(response)
#undef PROXLET_HEADER_READERS

// `len` bytes as a malloc'd list (empty: no allocation).
static inline plugin_list_u8_t proxlet_bytes(const void *data, size_t len) {
  plugin_list_u8_t bytes = {NULL, len};
  if (len) {
    bytes.ptr = proxlet_realloc(NULL, len);
    memcpy(bytes.ptr, data, len);
  }
  return bytes;
}

// The strings up to a NULL, joined into a new C string.
static inline char *proxlet_concat(const char *first, ...) {
  va_list args;
  size_t len = 0;
  va_start(args, first);
  for (const char *s = first; s; s = va_arg(args, const char *)) len += strlen(s);
  va_end(args);
  char *text = proxlet_realloc(NULL, len + 1);
  text[0] = '\0';
  va_start(args, first);
  for (const char *s = first; s; s = va_arg(args, const char *)) strcat(text, s);
  va_end(args);
  return text;
}

// Edits, appended to a list such as `ret->val.continue_`.
static inline proxlet_edit_t *proxlet_push_edit(proxlet_edits_t *edits, uint8_t tag) {
  edits->ptr = proxlet_realloc(edits->ptr, (edits->len + 1) * sizeof *edits->ptr);
  proxlet_edit_t *edit = &edits->ptr[edits->len++];
  edit->tag = tag;
  return edit;
}

static inline void proxlet_set_header(proxlet_edits_t *edits, const char *name, const char *value) {
  proxlet_edit_t *edit = proxlet_push_edit(edits, PROXLET_PLUGIN_TYPES_EDIT_SET_HEADER);
  plugin_string_dup(&edit->val.set_header.name, name);
  edit->val.set_header.value = proxlet_bytes(value, strlen(value));
}

static inline void proxlet_append_header(proxlet_edits_t *edits, const char *name, const char *value) {
  proxlet_edit_t *edit = proxlet_push_edit(edits, PROXLET_PLUGIN_TYPES_EDIT_APPEND_HEADER);
  plugin_string_dup(&edit->val.append_header.name, name);
  edit->val.append_header.value = proxlet_bytes(value, strlen(value));
}

static inline void proxlet_remove_header(proxlet_edits_t *edits, const char *name) {
  plugin_string_dup(&proxlet_push_edit(edits, PROXLET_PLUGIN_TYPES_EDIT_REMOVE_HEADER)->val.remove_header, name);
}

static inline void proxlet_set_method(proxlet_edits_t *edits, const char *method) {
  plugin_string_dup(&proxlet_push_edit(edits, PROXLET_PLUGIN_TYPES_EDIT_SET_METHOD)->val.set_method, method);
}

static inline void proxlet_set_url(proxlet_edits_t *edits, const char *url) {
  plugin_string_dup(&proxlet_push_edit(edits, PROXLET_PLUGIN_TYPES_EDIT_SET_URL)->val.set_url, url);
}

static inline void proxlet_set_authority(proxlet_edits_t *edits, const char *authority) {
  plugin_string_dup(&proxlet_push_edit(edits, PROXLET_PLUGIN_TYPES_EDIT_SET_AUTHORITY)->val.set_authority,
                    authority);
}

static inline void proxlet_set_path(proxlet_edits_t *edits, const char *path) {
  plugin_string_dup(&proxlet_push_edit(edits, PROXLET_PLUGIN_TYPES_EDIT_SET_PATH)->val.set_path, path);
}

static inline void proxlet_set_status(proxlet_edits_t *edits, uint16_t status) {
  proxlet_push_edit(edits, PROXLET_PLUGIN_TYPES_EDIT_SET_STATUS)->val.set_status = status;
}

// Adds `name: value` to a response's header fields.
static inline void proxlet_push_header(proxlet_headers_t *headers, const char *name, const char *value) {
  headers->ptr = proxlet_realloc(headers->ptr, (headers->len + 1) * sizeof *headers->ptr);
  plugin_tuple2_string_list_u8_t *field = &headers->ptr[headers->len++];
  plugin_string_dup(&field->f0, name);
  field->f1 = proxlet_bytes(value, strlen(value));
}

// A response with `body` as its bytes, for `respond`, `replace` or on_error.
static inline proxlet_response_t proxlet_response(uint16_t status, const char *content_type,
                                                  const char *body) {
  proxlet_response_t response = {.status = status};
  proxlet_push_header(&response.headers, "content-type", content_type);
  response.body.tag = PROXLET_PLUGIN_TYPES_BODY_BYTES;
  response.body.val.bytes = proxlet_bytes(body, strlen(body));
  return response;
}

static inline void proxlet_log(proxlet_plugin_host_level_t level, const char *text) {
  plugin_string_t message;
  plugin_string_set(&message, text);
  proxlet_plugin_host_log(level, &message);
}

// The config is a JSON object; these read flat ones (no nesting, string
// escapes \" and \\ only), which is what a `config = { … }` table gives.

// The text after `"key":`, or NULL.
static inline const char *proxlet_config_value(const char *json, const char *key) {
  size_t len = strlen(key);
  for (const char *p = strchr(json, '"'); p; p = strchr(p + 1, '"')) {
    if (strncmp(p + 1, key, len) == 0 && p[len + 1] == '"') {
      const char *v = p + len + 2;
      v += strspn(v, " \t\r\n");
      if (*v != ':') continue;
      v++;
      return v + strspn(v, " \t\r\n");
    }
  }
  return NULL;
}

// The string at `key` as a new C string, or NULL when absent or not a string.
static inline char *proxlet_config_string(const char *json, const char *key) {
  const char *v = proxlet_config_value(json, key);
  if (!v || *v != '"') return NULL;
  char *out = proxlet_realloc(NULL, strlen(v));
  size_t n = 0;
  for (v++; *v && *v != '"'; v++) {
    if (*v == '\\' && v[1]) v++;
    out[n++] = *v;
  }
  out[n] = '\0';
  return out;
}

// The integer at `key`, or `fallback` when absent.
static inline long proxlet_config_int(const char *json, const char *key, long fallback) {
  const char *v = proxlet_config_value(json, key);
  return v ? strtol(v, NULL, 10) : fallback;
}

#ifdef PROXLET_HOOKS
// What the plugin writes. `init` gets the config as JSON (`{}` when none);
// to refuse the load it returns false with a malloc'd message in `*error`.
// Each hook finds `*ret` zeroed: go on unchanged (on_error: no answer, and
// it returns whether it filled `*ret`).
bool init(const char *config, char **error);
void on_request(const proxlet_flow_t *flow, proxlet_request_head_t request, proxlet_request_action_t *ret);
void on_request_body(const proxlet_flow_t *flow, proxlet_request_head_t request, plugin_list_u8_t *body,
                     proxlet_request_body_action_t *ret);
void on_response(const proxlet_flow_t *flow, proxlet_request_head_t request, proxlet_response_head_t response,
                 proxlet_response_action_t *ret);
void on_response_body(const proxlet_flow_t *flow, proxlet_request_head_t request,
                      proxlet_response_head_t response, plugin_list_u8_t *body,
                      proxlet_response_body_action_t *ret);
bool on_error(const proxlet_flow_t *flow, proxlet_request_head_t request, const proxlet_upstream_error_t *error,
              proxlet_response_t *ret);

// The exports. The canonical ABI traps a call that returns still holding a
// borrowed head, so each drops its heads after the hook.
#define PROXLET_HAS(hook) (((PROXLET_HOOKS) & PROXLET_PLUGIN_TYPES_HOOKS_##hook) != 0)

bool exports_proxlet_plugin_lifecycle_init(plugin_string_t *config, exports_proxlet_plugin_lifecycle_hooks_t *ret,
                                           plugin_string_t *err) {
  char *json = proxlet_take_string(config);
  char *error = NULL;
  bool ok = init(json, &error);
  free(json);
  if (!ok) {
    plugin_string_dup(err, error ? error : "init failed");
    free(error);
    return false;
  }
  *ret = PROXLET_HOOKS;
  return true;
}

void exports_proxlet_plugin_request_hooks_on_request(proxlet_flow_t *flow, proxlet_request_head_t request,
                                                     proxlet_request_action_t *ret) {
  memset(ret, 0, sizeof *ret);
#if PROXLET_HAS(ON_REQUEST)
  on_request(flow, request, ret);
#endif
  proxlet_plugin_types_request_head_drop_borrow(request);
}

void exports_proxlet_plugin_request_hooks_on_request_body(proxlet_flow_t *flow, proxlet_request_head_t request,
                                                          plugin_list_u8_t *body,
                                                          proxlet_request_body_action_t *ret) {
  memset(ret, 0, sizeof *ret);
#if PROXLET_HAS(ON_REQUEST_BODY)
  on_request_body(flow, request, body, ret);
#else
  plugin_list_u8_free(body);
#endif
  proxlet_plugin_types_request_head_drop_borrow(request);
}

void exports_proxlet_plugin_response_hooks_on_response(proxlet_flow_t *flow, proxlet_request_head_t request,
                                                       proxlet_response_head_t response,
                                                       proxlet_response_action_t *ret) {
  memset(ret, 0, sizeof *ret);
#if PROXLET_HAS(ON_RESPONSE)
  on_response(flow, request, response, ret);
#endif
  proxlet_plugin_types_request_head_drop_borrow(request);
  proxlet_plugin_types_response_head_drop_borrow(response);
}

void exports_proxlet_plugin_response_hooks_on_response_body(proxlet_flow_t *flow,
                                                            proxlet_request_head_t request,
                                                            proxlet_response_head_t response,
                                                            plugin_list_u8_t *body,
                                                            proxlet_response_body_action_t *ret) {
  memset(ret, 0, sizeof *ret);
#if PROXLET_HAS(ON_RESPONSE_BODY)
  on_response_body(flow, request, response, body, ret);
#else
  plugin_list_u8_free(body);
#endif
  proxlet_plugin_types_request_head_drop_borrow(request);
  proxlet_plugin_types_response_head_drop_borrow(response);
}

bool exports_proxlet_plugin_error_hooks_on_error(proxlet_flow_t *flow, proxlet_request_head_t request,
                                                 proxlet_upstream_error_t *error, proxlet_response_t *ret) {
  memset(ret, 0, sizeof *ret);
#if PROXLET_HAS(ON_ERROR)
  bool answered = on_error(flow, request, error, ret);
#else
  bool answered = false;
#endif
  proxlet_plugin_types_upstream_error_free(error);
  proxlet_plugin_types_request_head_drop_borrow(request);
  return answered;
}
#undef PROXLET_HAS
#endif  // PROXLET_HOOKS

#endif  // PROXLET_H
