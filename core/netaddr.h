/*
 * netaddr - IPv4/IPv6 addresses and CIDR lists (relay_networks).
 *
 * Any thread; lists are immutable after parsing. No I/O, no DNS.
 */
#ifndef RINGMTA_CORE_NETADDR_H
#define RINGMTA_CORE_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct netaddr {
    int family;          /* AF_INET or AF_INET6 */
    uint8_t bytes[16];   /* network order; the first 4 for AF_INET */
};

struct cidr {
    struct netaddr net;
    uint8_t prefix;      /* 0..32 or 0..128 */
};

struct cidr_list {
    struct cidr *items;
    size_t count;
};

/* Fills out from a sockaddr_in/sockaddr_in6; an IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d) becomes AF_INET. Returns 0, or -1 for other families. */
int netaddr_from_sockaddr(struct netaddr *out, const struct sockaddr *sa);
/* "192.0.2.1" or "2001:db8::1" (no brackets). Returns 0 or -1. */
int netaddr_parse(struct netaddr *out, const char *text);
/* Formats as text (IPv6 without brackets); returns buf. size >= 46. */
char *netaddr_format(const struct netaddr *a, char *buf, size_t size);

/* Parses "127.0.0.0/8, ::1, [2001:db8::]/32" (comma/space separated, brackets
 * optional, a bare address is a host route). Returns 0, or -1 with err filled. */
int cidr_list_parse(struct cidr_list *out, const char *text, char *err, size_t errsize);
bool cidr_list_match(const struct cidr_list *list, const struct netaddr *a);
void cidr_list_free(struct cidr_list *list);

#endif
