/* fsutil — durable file operations. No mail knowledge.
 * Durability contract: fsutil_write_atomic() returns 0 only after the data
 * is fsync'd, close() checked, renamed into place and the directory
 * fsync'd. All functions may block (call them off the event loop). */
#ifndef LIB_FSUTIL_H
#define LIB_FSUTIL_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* mkdir -p with mode; existing directories are fine. */
int fsutil_mkdir_p(const char *path, mode_t mode, const char **error_r);
/* fsync a directory by path. */
int fsutil_fsync_dir(const char *path);
/* Write data to path via path.tmp-XXXX, fsync, rename, fsync dir. */
int fsutil_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                        const char **error_r);
/* write(2) all of it, retrying on EINTR/short writes. */
int fsutil_write_all(int fd, const void *data, size_t len);
/* Reads a whole file (up to max bytes; -1 with EFBIG past that). Returns a
 * NUL-terminated xmalloc'd buffer in *data_r. */
int fsutil_read_file(const char *path, size_t max, char **data_r, size_t *len_r);
/* Directory part of path into buf. */
void fsutil_dirname(const char *path, char *buf, size_t n);
bool fsutil_is_dir(const char *path);

#endif
