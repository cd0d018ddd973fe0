/* log — the event log and the human log.
 *
 * Every event is one JSON object per line in var/log/events.jsonl and the
 * same facts as one "key=value" line on stderr. Thread-safe: each event is
 * a single write(2) on an O_APPEND descriptor. Never pass passwords or
 * message bodies here. */
#ifndef LIB_LOG_H
#define LIB_LOG_H
#include <stdbool.h>
#include <stdint.h>
#include "lib/strbuf.h"

/* events_path may be NULL (stderr only). quiet suppresses stderr lines. */
int log_open(const char *events_path, bool quiet, const char **error_r);
void log_close(void);

/* Free-form diagnostics to stderr (not an event). */
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Building one event:
 *   struct event e; event_begin(&e, "queued", session_id);
 *   event_str(&e, "id", qid); event_int(&e, "size", n); event_end(&e); */
struct event {
	struct strbuf json;
	struct strbuf text;
};
void event_begin(struct event *e, const char *type, const char *session);
void event_str(struct event *e, const char *key, const char *value);
void event_int(struct event *e, const char *key, int64_t value);
void event_end(struct event *e);

#endif
