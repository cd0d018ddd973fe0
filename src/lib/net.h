/* net — socket helpers: listening sockets from "host:port" strings, peer
 * addresses as text. No mail knowledge. */
#ifndef LIB_NET_H
#define LIB_NET_H
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* "127.0.0.1:2525", "[::1]:2525", "*:25" → address; -1 with error_r. */
int net_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len_r,
                       const char **error_r);
/* Non-blocking, close-on-exec listening socket. */
int net_listen(const char *hostport, const char **error_r);
/* Numeric address (no port) of sa into buf. */
void net_addr_str(const struct sockaddr *sa, char *buf, size_t n);
/* Port number of sa. */
int net_addr_port(const struct sockaddr *sa);
bool net_addr_is_loopback(const struct sockaddr *sa);
/* Local and peer address strings for a connected socket. */
void net_peer_str(int fd, char *buf, size_t n);

/* "10.0.0.0/8" style network list matching (IPv4 and IPv6). */
struct net_cidr {
	int family;
	unsigned char addr[16];
	int bits;
};
int net_cidr_parse(const char *s, struct net_cidr *c, const char **error_r);
bool net_cidr_match(const struct net_cidr *c, const struct sockaddr *sa);

#endif
