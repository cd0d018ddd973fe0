/* net — see net.h. */
#include "lib/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int net_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len_r,
                       const char **error_r)
{
	char host[256];
	const char *port;
	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		const char *end = strchr(s, ']');
		if (end == NULL || end[1] != ':') {
			*error_r = "expected [IPv6]:port";
			return -1;
		}
		if ((size_t)(end - s - 1) >= sizeof(host)) {
			*error_r = "address too long";
			return -1;
		}
		memcpy(host, s + 1, (size_t)(end - s - 1));
		host[end - s - 1] = '\0';
		port = end + 2;
	} else {
		const char *colon = strrchr(s, ':');
		if (colon == NULL) {
			*error_r = "expected address:port";
			return -1;
		}
		if ((size_t)(colon - s) >= sizeof(host)) {
			*error_r = "address too long";
			return -1;
		}
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = '\0';
		port = colon + 1;
	}
	char *end;
	errno = 0;
	long p = strtol(port, &end, 10);
	if (*port == '\0' || *end != '\0' || errno || p < 0 || p > 65535) {
		*error_r = "bad port number";
		return -1;
	}
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	if (strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0 || host[0] == '\0') {
		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
		sin->sin_port = htons((uint16_t)p);
		*len_r = sizeof(*sin);
	} else if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)p);
		*len_r = sizeof(*sin);
	} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)p);
		*len_r = sizeof(*sin6);
	} else {
		*error_r = "not a numeric IP address";
		return -1;
	}
	return 0;
}

int net_listen(const char *hostport, const char **error_r)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (net_parse_hostport(hostport, &ss, &len, error_r) < 0)
		return -1;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*error_r = strerror(errno);
		return -1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 511) < 0) {
		*error_r = strerror(errno);
		close(fd);
		return -1;
	}
	return fd;
}

void net_addr_str(const struct sockaddr *sa, char *buf, size_t n)
{
	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)n);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
			inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], buf, (socklen_t)n);
		else
			inet_ntop(AF_INET6, &s6->sin6_addr, buf, (socklen_t)n);
	} else if (sa->sa_family == AF_UNIX) {
		snprintf(buf, n, "local");
	} else {
		snprintf(buf, n, "unknown");
	}
}

int net_addr_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return 0;
}

bool net_addr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_LOOPBACK(a))
			return true;
		if (IN6_IS_ADDR_V4MAPPED(a))
			return a->s6_addr[12] == 127;
		return false;
	}
	return sa->sa_family == AF_UNIX;
}

void net_peer_str(int fd, char *buf, size_t n)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0) {
		snprintf(buf, n, "unknown");
		return;
	}
	net_addr_str((struct sockaddr *)&ss, buf, n);
}

int net_cidr_parse(const char *s, struct net_cidr *c, const char **error_r)
{
	char host[64];
	const char *slash = strchr(s, '/');
	size_t hl = slash ? (size_t)(slash - s) : strlen(s);
	if (hl == 0 || hl >= sizeof(host)) {
		*error_r = "bad network address";
		return -1;
	}
	memcpy(host, s, hl);
	host[hl] = '\0';
	memset(c, 0, sizeof(*c));
	int maxbits;
	if (inet_pton(AF_INET, host, c->addr) == 1) {
		c->family = AF_INET;
		maxbits = 32;
	} else if (inet_pton(AF_INET6, host, c->addr) == 1) {
		c->family = AF_INET6;
		maxbits = 128;
	} else {
		*error_r = "not a numeric IP network (want a.b.c.d/nn or v6/nn)";
		return -1;
	}
	c->bits = maxbits;
	if (slash) {
		char *end;
		long b = strtol(slash + 1, &end, 10);
		if (slash[1] == '\0' || *end != '\0' || b < 0 || b > maxbits) {
			*error_r = "bad prefix length";
			return -1;
		}
		c->bits = (int)b;
	}
	return 0;
}

bool net_cidr_match(const struct net_cidr *c, const struct sockaddr *sa)
{
	const unsigned char *a;
	unsigned char v4[4];
	if (sa->sa_family == AF_INET) {
		if (c->family != AF_INET)
			return false;
		a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a6) && c->family == AF_INET) {
			memcpy(v4, &a6->s6_addr[12], 4);
			a = v4;
		} else if (c->family == AF_INET6) {
			a = a6->s6_addr;
		} else {
			return false;
		}
	} else {
		return false;
	}
	int bits = c->bits;
	for (int i = 0; bits > 0; i++, bits -= 8) {
		unsigned char mask = bits >= 8 ? 0xff : (unsigned char)(0xff << (8 - bits));
		if ((a[i] & mask) != (c->addr[i] & mask))
			return false;
	}
	return true;
}
