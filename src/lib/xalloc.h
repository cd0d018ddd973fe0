/* xalloc — allocation that never returns NULL: out of memory aborts.
 * Sizes are size_t and multiplications are overflow-checked (xcalloc,
 * xreallocarray). No mail knowledge. */
#ifndef LIB_XALLOC_H
#define LIB_XALLOC_H
#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
void *xreallocarray(void *p, size_t nmemb, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* printf into a new string; aborts on OOM or an encoding error. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* snprintf that must not truncate (paths from validated parts): aborts if
 * it would. Returns the length. */
int xsnprintf(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Abort with a message: our own invariant is broken. */
_Noreturn void panic(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Exit(1) with a message: the environment is unusable (bad config, bind). */
_Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
