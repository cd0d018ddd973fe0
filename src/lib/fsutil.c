/* fsutil — see fsutil.h. Blocking; used by worker threads and the CLI. */
#include "lib/fsutil.h"
#include "lib/xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fsutil_mkdir_p(const char *path, mode_t mode, const char **error_r)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof(buf)) {
		*error_r = "path too long";
		return -1;
	}
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; ; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;
			*p = '\0';
			if (mkdir(buf, mode) < 0 && errno != EEXIST) {
				*error_r = strerror(errno);
				return -1;
			}
			*p = c;
			if (c == '\0')
				break;
		}
	}
	if (!fsutil_is_dir(path)) {
		*error_r = "exists and is not a directory";
		return -1;
	}
	return 0;
}

int fsutil_fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int r = fsync(fd);
	int e = errno;
	close(fd);
	errno = e;
	return r;
}

int fsutil_write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

void fsutil_dirname(const char *path, char *buf, size_t n)
{
	const char *slash = strrchr(path, '/');
	if (slash == NULL) {
		snprintf(buf, n, ".");
		return;
	}
	size_t k = (size_t)(slash - path);
	if (k == 0)
		k = 1;
	snprintf(buf, n, "%.*s", (int)k, path);
}

int fsutil_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                        const char **error_r)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path) >= sizeof(tmp)) {
		*error_r = "path too long";
		return -1;
	}
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		*error_r = strerror(errno);
		return -1;
	}
	if (fchmod(fd, mode) < 0 || fsutil_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
		*error_r = strerror(errno);
		close(fd);
		unlink(tmp);
		return -1;
	}
	if (close(fd) < 0 || rename(tmp, path) < 0) {
		*error_r = strerror(errno);
		unlink(tmp);
		return -1;
	}
	fsutil_dirname(path, dir, sizeof(dir));
	if (fsutil_fsync_dir(dir) < 0) {
		*error_r = strerror(errno);
		return -1;
	}
	return 0;
}

int fsutil_read_file(const char *path, size_t max, char **data_r, size_t *len_r)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	if ((size_t)st.st_size > max) {
		close(fd);
		errno = EFBIG;
		return -1;
	}
	size_t cap = (size_t)st.st_size + 1, len = 0;
	char *buf = xmalloc(cap);
	for (;;) {
		if (len + 1 >= cap) {
			if (cap > max + 1) {
				free(buf);
				close(fd);
				errno = EFBIG;
				return -1;
			}
			cap *= 2;
			buf = xrealloc(buf, cap);
		}
		ssize_t r = read(fd, buf + len, cap - len - 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			int e = errno;
			free(buf);
			close(fd);
			errno = e;
			return -1;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	*data_r = buf;
	*len_r = len;
	return 0;
}

bool fsutil_is_dir(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}
