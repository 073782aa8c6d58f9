/*
 * Tests for core/netaddr: address text, sockaddr conversion, CIDR lists.
 * Parameter structs hold their text inline: Criterion re-executes the test
 * binary per case, so pointers into the parent's image would dangle.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "netaddr.h"

struct parse_case {
    char text[64];
    int family;          /* 0: must be refused */
    char formatted[64];
};

ParameterizedTestParameters(netaddr, parses_and_formats)
{
    static struct parse_case cases[] = {
        { "192.0.2.1", AF_INET, "192.0.2.1" },
        { "0.0.0.0", AF_INET, "0.0.0.0" },
        { "255.255.255.255", AF_INET, "255.255.255.255" },
        { "2001:db8::1", AF_INET6, "2001:db8::1" },
        { "2001:DB8:0:0:0:0:0:1", AF_INET6, "2001:db8::1" },
        { "::1", AF_INET6, "::1" },
        { "::", AF_INET6, "::" },
        { "fe80::1:2:3:4", AF_INET6, "fe80::1:2:3:4" },
        /* IPv4-mapped text folds to AF_INET, like a mapped socket peer. */
        { "::ffff:192.0.2.1", AF_INET, "192.0.2.1" },
        { "::FFFF:c000:0201", AF_INET, "192.0.2.1" },
        /* IPv4-compatible (deprecated) is not mapped: stays IPv6. */
        { "::192.0.2.1", AF_INET6, "::192.0.2.1" },

        { "", 0, "" },
        { "1.2.3", 0, "" },
        { "1.2.3.4.5", 0, "" },
        { "256.1.1.1", 0, "" },
        { "1.2.3.-1", 0, "" },
        { "0x7f.0.0.1", 0, "" },
        { "127.1", 0, "" },
        { " 1.2.3.4", 0, "" },
        { "1.2.3.4 ", 0, "" },
        { "[::1]", 0, "" },
        { "::1%lo", 0, "" },
        { "2001:db8::1::2", 0, "" },
        { "gggg::1", 0, "" },
        { "1:2:3:4:5:6:7:8:9", 0, "" },
        { "1.2.3.4/32", 0, "" },
        { "localhost", 0, "" },
        { "::ffff:192.0.2.1:1234567890123456789012345678901234567", 0, "" },
    };
    return cr_make_param_array(struct parse_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct parse_case *c, netaddr, parses_and_formats)
{
    struct netaddr a;
    char buf[64];

    if (c->family == 0) {
        cr_assert_eq(netaddr_parse(&a, c->text), -1, "accepted \"%s\"", c->text);
        return;
    }
    cr_assert_eq(netaddr_parse(&a, c->text), 0, "refused \"%s\"", c->text);
    cr_assert_eq(a.family, c->family, "\"%s\"", c->text);
    cr_assert_str_eq(netaddr_format(&a, buf, sizeof buf), c->formatted);
    if (a.family == AF_INET)
        for (int i = 4; i < 16; i++)
            cr_assert_eq(a.bytes[i], 0, "stray byte %d for \"%s\"", i, c->text);
}

Test(netaddr, format_fits_longest_ipv6_in_46_octets)
{
    struct netaddr a;
    char buf[46];

    cr_assert_eq(netaddr_parse(&a, "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"), 0);
    cr_assert_str_eq(netaddr_format(&a, buf, sizeof buf), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
}

Test(netaddr, format_of_unknown_family_is_a_placeholder)
{
    struct netaddr a = { .family = AF_UNIX };
    char buf[46];

    cr_assert_str_eq(netaddr_format(&a, buf, sizeof buf), "?");
}

Test(netaddr, from_sockaddr_in)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(25) };
    struct netaddr a;
    char buf[46];

    inet_pton(AF_INET, "198.51.100.7", &sin.sin_addr);
    memset(&a, 0xaa, sizeof a);
    cr_assert_eq(netaddr_from_sockaddr(&a, (struct sockaddr *)&sin), 0);
    cr_assert_eq(a.family, AF_INET);
    cr_assert_str_eq(netaddr_format(&a, buf, sizeof buf), "198.51.100.7");
    for (int i = 4; i < 16; i++)
        cr_assert_eq(a.bytes[i], 0);
}

Test(netaddr, from_sockaddr_in6)
{
    struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
    struct netaddr a;
    char buf[46];

    inet_pton(AF_INET6, "2001:db8::25", &sin6.sin6_addr);
    cr_assert_eq(netaddr_from_sockaddr(&a, (struct sockaddr *)&sin6), 0);
    cr_assert_eq(a.family, AF_INET6);
    cr_assert_str_eq(netaddr_format(&a, buf, sizeof buf), "2001:db8::25");
}

Test(netaddr, from_sockaddr_folds_ipv4_mapped_to_inet)
{
    struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
    struct netaddr a, b;

    inet_pton(AF_INET6, "::ffff:127.0.0.1", &sin6.sin6_addr);
    cr_assert_eq(netaddr_from_sockaddr(&a, (struct sockaddr *)&sin6), 0);
    cr_assert_eq(a.family, AF_INET);
    cr_assert_eq(netaddr_parse(&b, "127.0.0.1"), 0);
    cr_assert_arr_eq(&a, &b, sizeof a);
}

Test(netaddr, from_sockaddr_refuses_other_families)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct netaddr a;

    cr_assert_eq(netaddr_from_sockaddr(&a, (struct sockaddr *)&sun), -1);
}

/* ---- CIDR lists ---- */

struct cidr_parse_case {
    char text[96];
    int count;           /* -1: must be refused */
};

ParameterizedTestParameters(netaddr, parses_cidr_lists)
{
    static struct cidr_parse_case cases[] = {
        { "", 0 },
        { " , ,\t", 0 },
        { "127.0.0.0/8, ::1, [2001:db8::]/32", 3 },
        { "127.0.0.0/8,::1", 2 },
        { "10.0.0.0/8 192.168.0.0/16\n172.16.0.0/12", 3 },
        { "[192.0.2.1]", 1 },
        { "[::1]/128", 1 },
        { "0.0.0.0/0, ::/0", 2 },
        { "192.0.2.128/25", 1 },
        { "::ffff:10.0.0.0/104", 1 },

        { "10.0.0.0/33", -1 },
        { "::/129", -1 },
        { "10.1.2.3/8", -1 },
        { "192.0.2.129/25", -1 },
        { "2001:db8::1/32", -1 },
        { "10.0.0.0/", -1 },
        { "10.0.0.0/x", -1 },
        { "10.0.0.0/-8", -1 },
        { "10.0.0.0/08", -1 },
        { "10.0.0.0/8/8", -1 },
        { "/8", -1 },
        { "foo", -1 },
        { "127.0.0.0/8, foo", -1 },
        { "[10.0.0.1", -1 },
        { "10.0.0.1]", -1 },
        { "[]", -1 },
        { "10.0.0.0;8", -1 },
        { "::ffff:0:0/95", -1 },
        { "2001:db8::/32/", -1 },
        { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", -1 },
    };
    return cr_make_param_array(struct cidr_parse_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct cidr_parse_case *c, netaddr, parses_cidr_lists)
{
    struct cidr_list l;
    char err[128];

    memset(err, 'x', sizeof err);
    int rc = cidr_list_parse(&l, c->text, err, sizeof err);
    if (c->count < 0) {
        cr_assert_eq(rc, -1, "accepted \"%s\"", c->text);
        cr_assert_neq(err[0], '\0', "no message for \"%s\"", c->text);
        cr_assert_not_null(memchr(err, '\0', sizeof err));
        cr_assert_null(l.items);
        cr_assert_eq(l.count, 0);
    } else {
        cr_assert_eq(rc, 0, "refused \"%s\": %s", c->text, err);
        cr_assert_eq(l.count, (size_t)c->count, "\"%s\"", c->text);
    }
    cidr_list_free(&l);
}

struct match_case {
    char list[96];
    char addr[48];
    bool match;
};

ParameterizedTestParameters(netaddr, matches_cidr_lists)
{
    static struct match_case cases[] = {
        { "127.0.0.0/8", "127.1.2.3", true },
        { "127.0.0.0/8", "128.0.0.1", false },
        { "127.0.0.0/8", "126.255.255.255", false },
        { "10.0.0.0/9", "10.127.255.255", true },
        { "10.0.0.0/9", "10.128.0.0", false },
        { "192.0.2.128/25", "192.0.2.200", true },
        { "192.0.2.128/25", "192.0.2.127", false },
        { "192.0.2.1", "192.0.2.1", true },
        { "192.0.2.1", "192.0.2.2", false },
        { "0.0.0.0/0", "203.0.113.9", true },
        { "0.0.0.0/0", "2001:db8::1", false },
        { "::/0", "2001:db8::1", true },
        { "::/0", "203.0.113.9", false },
        { "2001:db8::/32", "2001:db8:ffff::1", true },
        { "2001:db8::/32", "2001:db9::1", false },
        { "2001:db8::/33", "2001:db8:7fff::1", true },
        { "2001:db8::/33", "2001:db8:8000::1", false },
        { "::1", "::1", true },
        { "::1", "::2", false },
        { "[::1]/128", "::1", true },
        /* A mapped network covers the plain IPv4 peers it names. */
        { "::ffff:10.0.0.0/104", "10.9.9.9", true },
        { "::ffff:10.0.0.0/104", "11.0.0.1", false },
        /* 127.0.0.1 must not match an IPv6 network with the same bytes. */
        { "7f00:1::/32", "127.0.0.1", false },
        { "", "127.0.0.1", false },
        { "198.51.100.0/24, 2001:db8::/32, 127.0.0.0/8", "127.0.0.1", true },
    };
    return cr_make_param_array(struct match_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct match_case *c, netaddr, matches_cidr_lists)
{
    struct cidr_list l;
    struct netaddr a;
    char err[128];

    cr_assert_eq(cidr_list_parse(&l, c->list, err, sizeof err), 0, "%s", err);
    cr_assert_eq(netaddr_parse(&a, c->addr), 0);
    cr_assert_eq(cidr_list_match(&l, &a), c->match, "%s in %s", c->addr, c->list);
    cidr_list_free(&l);
}

Test(netaddr, mapped_peer_matches_ipv4_network)
{
    struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
    struct cidr_list l;
    struct netaddr a;
    char err[64];

    cr_assert_eq(cidr_list_parse(&l, "127.0.0.0/8", err, sizeof err), 0);
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &sin6.sin6_addr);
    cr_assert_eq(netaddr_from_sockaddr(&a, (struct sockaddr *)&sin6), 0);
    cr_assert(cidr_list_match(&l, &a));
    cidr_list_free(&l);
}

Test(netaddr, parse_error_tolerates_missing_or_tiny_err_buffer)
{
    struct cidr_list l;
    char err[4] = "zzz";

    cr_assert_eq(cidr_list_parse(&l, "nonsense", NULL, 0), -1);
    cr_assert_eq(cidr_list_parse(&l, "nonsense", err, sizeof err), -1);
    cr_assert_eq(err[3], '\0');
    cr_assert_eq(cidr_list_parse(&l, "also/nonsense", err, 1), -1);
    cr_assert_eq(err[0], '\0');
}

Test(netaddr, free_is_idempotent)
{
    struct cidr_list l;
    char err[64];

    cr_assert_eq(cidr_list_parse(&l, "10.0.0.0/8, ::1", err, sizeof err), 0);
    cidr_list_free(&l);
    cr_assert_null(l.items);
    cr_assert_eq(l.count, 0);
    cidr_list_free(&l);
}

Test(netaddr, parses_a_long_list)
{
    char text[8192];
    size_t n = 0;
    struct cidr_list l;
    struct netaddr a;
    char err[64];

    for (int i = 0; i < 256; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "10.%d.0.0/16, ", i);
    cr_assert_eq(cidr_list_parse(&l, text, err, sizeof err), 0, "%s", err);
    cr_assert_eq(l.count, 256);
    cr_assert_eq(netaddr_parse(&a, "10.255.1.1"), 0);
    cr_assert(cidr_list_match(&l, &a));
    cr_assert_eq(netaddr_parse(&a, "11.0.0.1"), 0);
    cr_assert_not(cidr_list_match(&l, &a));
    cidr_list_free(&l);
}
