/*
 * Tests for core/mx: the decision table, null MX, MX ordering, names and
 * literals, TTLs read from wire-form answers, and finishing a result.
 * Parameter structs hold their text inline: Criterion re-executes the test
 * binary per case, so pointers into the parent's image would dangle.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "mx.h"

/* --- decision table ---------------------------------------------------- */

struct decide_case {
    enum mx_answer answer;
    enum mx_status status;
    char dsn[8];
};

ParameterizedTestParameters(mx, decides_from_dns_outcome)
{
    static struct decide_case cases[] = {
        { MX_ANSWER_RECORDS, MX_OK, "" },
        { MX_ANSWER_NODATA, MX_OK, "" },            /* implicit MX */
        { MX_ANSWER_NXDOMAIN, MX_PERMANENT, "5.1.2" },
        { MX_ANSWER_BADNAME, MX_PERMANENT, "5.1.2" },
        { MX_ANSWER_SERVFAIL, MX_TEMPORARY, "4.4.3" },
        { MX_ANSWER_REFUSED, MX_TEMPORARY, "4.4.3" },
        { MX_ANSWER_TIMEOUT, MX_TEMPORARY, "4.4.3" },
        { MX_ANSWER_UNREACHABLE, MX_TEMPORARY, "4.4.3" },
        { MX_ANSWER_BADRESP, MX_TEMPORARY, "4.4.3" },
        { MX_ANSWER_ERROR, MX_TEMPORARY, "4.4.3" },
    };
    return cr_make_param_array(struct decide_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct decide_case *c, mx, decides_from_dns_outcome)
{
    const char *dsn = NULL;
    cr_assert_eq(mx_decide(c->answer, &dsn), c->status, "%s", mx_answer_name(c->answer));
    cr_assert_str_eq(dsn, c->dsn);
}

/* --- null MX ------------------------------------------------------------- */

static struct mx_record
rec(const char *name, unsigned pref)
{
    struct mx_record r;
    memset(&r, 0, sizeof r);
    snprintf(r.name, sizeof r.name, "%s", name);
    r.preference = pref;
    return r;
}

Test(mx, null_mx_is_one_root_record_with_preference_0)
{
    struct mx_record one[1] = { rec("", 0) };
    cr_assert(mx_is_null(one, 1));
    one[0] = rec(".", 0);
    cr_assert(mx_is_null(one, 1));
}

Test(mx, root_with_nonzero_preference_is_not_null_mx)
{
    struct mx_record one[1] = { rec("", 10) };
    cr_assert_not(mx_is_null(one, 1));
}

Test(mx, root_among_other_records_is_not_null_mx_and_is_dropped)
{
    struct mx_record recs[2] = { rec("", 0), rec("mx.example.com", 10) };
    uint64_t rng = 1;
    cr_assert_not(mx_is_null(recs, 2));
    size_t n = mx_order(recs, 2, &rng);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(recs[0].name, "mx.example.com");
}

Test(mx, ordinary_single_record_is_not_null_mx)
{
    struct mx_record one[1] = { rec("mx.example.com", 0) };
    cr_assert_not(mx_is_null(one, 1));
    cr_assert_not(mx_is_null(one, 0));
}

/* --- ordering ---------------------------------------------------------- */

Test(mx, orders_by_preference_ascending)
{
    struct mx_record recs[4] = { rec("c.example", 30), rec("a.example", 10),
                                 rec("d.example", 40), rec("b.example", 20) };
    uint64_t rng = 42;
    size_t n = mx_order(recs, 4, &rng);
    cr_assert_eq(n, 4);
    cr_assert_str_eq(recs[0].name, "a.example");
    cr_assert_str_eq(recs[1].name, "b.example");
    cr_assert_str_eq(recs[2].name, "c.example");
    cr_assert_str_eq(recs[3].name, "d.example");
}

Test(mx, shuffles_equal_preferences_and_keeps_groups_in_order)
{
    /* Over many seeds every order of the three equals shows up, the lower
     * and higher preferences never move. */
    bool seen[3][3] = { { false } };
    for (uint64_t seed = 1; seed <= 200; seed++) {
        struct mx_record recs[5] = { rec("z.example", 50), rec("a.example", 10),
                                     rec("b.example", 10), rec("c.example", 10),
                                     rec("first.example", 5) };
        uint64_t rng = seed;
        cr_assert_eq(mx_order(recs, 5, &rng), 5);
        cr_assert_str_eq(recs[0].name, "first.example");
        cr_assert_str_eq(recs[4].name, "z.example");
        for (int i = 1; i <= 3; i++) {
            cr_assert_eq(recs[i].preference, 10);
            seen[i - 1][recs[i].name[0] - 'a'] = true;
        }
    }
    for (int pos = 0; pos < 3; pos++)
        for (int name = 0; name < 3; name++)
            cr_assert(seen[pos][name], "name %c never at position %d", 'a' + name, pos);
}

Test(mx, same_seed_gives_same_order)
{
    struct mx_record a[3] = { rec("a.example", 10), rec("b.example", 10), rec("c.example", 10) };
    struct mx_record b[3];
    memcpy(b, a, sizeof a);
    uint64_t r1 = 7, r2 = 7;
    mx_order(a, 3, &r1);
    mx_order(b, 3, &r2);
    for (int i = 0; i < 3; i++)
        cr_assert_str_eq(a[i].name, b[i].name);
}

Test(mx, drops_invalid_names_and_repeats_keeping_lowest_preference)
{
    struct mx_record recs[5] = { rec("MX1.Example.COM.", 20), rec("bad..name", 5),
                                 rec("mx1.example.com", 10), rec("-x.example", 1),
                                 rec("mx2.example.com", 30) };
    uint64_t rng = 3;
    size_t n = mx_order(recs, 5, &rng);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(recs[0].name, "mx1.example.com");
    cr_assert_eq(recs[0].preference, 10);
    cr_assert_str_eq(recs[1].name, "mx2.example.com");
}

Test(mx, keeps_at_most_mx_max_hosts)
{
    struct mx_record recs[MX_MAX_HOSTS + 5];
    for (int i = 0; i < MX_MAX_HOSTS + 5; i++) {
        char name[32];
        snprintf(name, sizeof name, "mx%d.example", i);
        recs[i] = rec(name, (unsigned)(100 - i));
    }
    uint64_t rng = 9;
    size_t n = mx_order(recs, MX_MAX_HOSTS + 5, &rng);
    cr_assert_eq(n, MX_MAX_HOSTS);
    /* The best (lowest) preferences are the ones kept. */
    cr_assert_eq(recs[0].preference, 100 - (MX_MAX_HOSTS + 4));
}

Test(mx, shuffle_addrs_is_a_permutation)
{
    struct netaddr a[6];
    memset(a, 0, sizeof a);
    for (int i = 0; i < 6; i++) {
        a[i].family = AF_INET;
        a[i].bytes[3] = (uint8_t)i;
    }
    uint64_t rng = 11;
    mx_shuffle_addrs(a, 6, &rng);
    int mask = 0;
    for (int i = 0; i < 6; i++)
        mask |= 1 << a[i].bytes[3];
    cr_assert_eq(mask, 0x3f);
}

/* --- names and literals ------------------------------------------------ */

struct name_case {
    char in[300];
    int ok;
    char out[260];
};

ParameterizedTestParameters(mx, normalizes_domain_names)
{
    static struct name_case cases[] = {
        { "example.com", 1, "example.com" },
        { "Example.COM.", 1, "example.com" },
        { "mx_1.example-host.com", 1, "mx_1.example-host.com" },
        { "localhost", 1, "localhost" },
        { "192.0.2.1", 1, "192.0.2.1" },   /* syntax only: callers test literals first */
        { "", 0, "" },
        { ".", 0, "" },
        { "a..b", 0, "" },
        { ".a", 0, "" },
        { "-a.example", 0, "" },
        { "a-.example", 0, "" },
        { "a.example-", 0, "" },
        { "a b.example", 0, "" },
        { "caf\xc3\xa9.example", 0, "" },   /* U-labels need IDNA first */
        { "[192.0.2.1]", 0, "" },
        /* 64-octet label */
        { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example", 0, "" },
    };
    return cr_make_param_array(struct name_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct name_case *c, mx, normalizes_domain_names)
{
    char out[MX_NAME_MAX];
    int r = mx_normalize_name(out, sizeof out, c->in);
    cr_assert_eq(r == 0, c->ok != 0, "\"%s\"", c->in);
    cr_assert_str_eq(out, c->out);
}

Test(mx, refuses_names_over_253_octets)
{
    char name[300];
    memset(name, 0, sizeof name);
    /* 4 labels of 63 + 3 dots = 255 */
    for (int i = 0; i < 4; i++) {
        memset(name + i * 64, 'a', 63);
        if (i < 3)
            name[i * 64 + 63] = '.';
    }
    char out[MX_NAME_MAX];
    cr_assert_eq(mx_normalize_name(out, sizeof out, name), -1);
    name[253] = '\0';   /* 253 octets, the last label shortened */
    cr_assert_eq(mx_normalize_name(out, sizeof out, name), 0);
}

struct literal_case {
    char text[80];
    int bare;
    int expect;          /* mx_parse_literal's return */
    char formatted[48];
};

ParameterizedTestParameters(mx, parses_address_literals)
{
    static struct literal_case cases[] = {
        { "[192.0.2.1]", 0, 1, "192.0.2.1" },
        { "[IPv6:2001:db8::1]", 0, 1, "2001:db8::1" },
        { "[ipv6:::1]", 0, 1, "::1" },
        { "[2001:db8::1]", 0, -1, "" },         /* RFC 5321 wants the tag */
        { "[IPv6:192.0.2.1]", 0, -1, "" },
        { "[mail.example.com]", 0, -1, "" },
        { "[]", 0, -1, "" },
        { "[192.0.2.1", 0, -1, "" },
        { "192.0.2.1", 0, 0, "" },
        { "192.0.2.1", 1, 1, "192.0.2.1" },
        { "2001:db8::2", 1, 1, "2001:db8::2" },
        { "example.com", 1, 0, "" },
        { "example.com", 0, 0, "" },
    };
    return cr_make_param_array(struct literal_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct literal_case *c, mx, parses_address_literals)
{
    struct netaddr a;
    int r = mx_parse_literal(c->text, c->bare != 0, &a);
    cr_assert_eq(r, c->expect, "\"%s\" bare=%d: %d", c->text, c->bare, r);
    if (r == 1) {
        char buf[64];
        cr_assert_str_eq(netaddr_format(&a, buf, sizeof buf), c->formatted);
    }
}

/* --- wire TTLs ------------------------------------------------------------ */

struct pkt {
    uint8_t b[512];
    size_t len;
};

static void
put(struct pkt *p, const void *d, size_t n)
{
    memcpy(p->b + p->len, d, n);
    p->len += n;
}

static void
put16(struct pkt *p, unsigned v)
{
    uint8_t b[2] = { (uint8_t)(v >> 8), (uint8_t)v };
    put(p, b, 2);
}

static void
put32(struct pkt *p, uint32_t v)
{
    uint8_t b[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
    put(p, b, 4);
}

/* "example.com" as labels at the current end. */
static void
put_name(struct pkt *p)
{
    put(p, "\x07" "example" "\x03" "com" "\x00", 13);
}

static void
header(struct pkt *p, unsigned rcode, unsigned an, unsigned ns)
{
    p->len = 0;
    put16(p, 0x1234);
    put16(p, 0x8180 | rcode);
    put16(p, 1);
    put16(p, an);
    put16(p, ns);
    put16(p, 0);
    put_name(p);            /* question at offset 12 */
    put16(p, 15);
    put16(p, 1);
}

static void
mx_rr(struct pkt *p, uint32_t ttl, unsigned pref)
{
    put16(p, 0xc00c);       /* name: pointer to the question */
    put16(p, 15);
    put16(p, 1);
    put32(p, ttl);
    put16(p, 2 + 2);
    put16(p, pref);
    put16(p, 0xc00c);
}

static void
soa_rr(struct pkt *p, uint32_t ttl, uint32_t minimum)
{
    put16(p, 0xc00c);
    put16(p, 6);
    put16(p, 1);
    put32(p, ttl);
    put16(p, 2 + 2 + 20);
    put16(p, 0xc00c);       /* mname */
    put16(p, 0xc00c);       /* rname */
    put32(p, 1);            /* serial */
    put32(p, 2);            /* refresh */
    put32(p, 3);            /* retry */
    put32(p, 4);            /* expire */
    put32(p, minimum);
}

Test(mx, wire_ttls_take_the_smallest_answer_ttl)
{
    struct pkt p;
    header(&p, 0, 2, 0);
    mx_rr(&p, 300, 10);
    mx_rr(&p, 100, 20);
    uint32_t ttl, neg;
    cr_assert_eq(mx_wire_ttls(p.b, p.len, &ttl, &neg), 0);
    cr_assert_eq(ttl, 100);
    cr_assert_eq(neg, UINT32_MAX);
}

Test(mx, wire_ttls_read_negative_ttl_from_soa)
{
    struct pkt p;
    header(&p, 3, 0, 1);
    soa_rr(&p, 900, 60);
    uint32_t ttl, neg;
    cr_assert_eq(mx_wire_ttls(p.b, p.len, &ttl, &neg), 0);
    cr_assert_eq(ttl, UINT32_MAX);
    cr_assert_eq(neg, 60);      /* RFC 2308: min(SOA TTL, MINIMUM) */
    header(&p, 3, 0, 1);
    soa_rr(&p, 30, 3600);
    cr_assert_eq(mx_wire_ttls(p.b, p.len, &ttl, &neg), 0);
    cr_assert_eq(neg, 30);
}

Test(mx, wire_ttl_with_top_bit_set_counts_as_zero)
{
    struct pkt p;
    header(&p, 0, 1, 0);
    mx_rr(&p, 0x80000000u, 10);
    uint32_t ttl, neg;
    cr_assert_eq(mx_wire_ttls(p.b, p.len, &ttl, &neg), 0);
    cr_assert_eq(ttl, 0);
}

Test(mx, wire_ttls_refuse_every_truncation)
{
    struct pkt p;
    header(&p, 0, 2, 1);
    mx_rr(&p, 300, 10);
    mx_rr(&p, 100, 20);
    soa_rr(&p, 50, 50);
    uint32_t ttl, neg;
    cr_assert_eq(mx_wire_ttls(p.b, p.len, &ttl, &neg), 0);
    for (size_t len = 0; len < p.len; len++)
        cr_assert_eq(mx_wire_ttls(p.b, len, &ttl, &neg), -1, "len %zu", len);
}

Test(mx, wire_ttls_refuse_reserved_label_types)
{
    struct pkt p;
    header(&p, 0, 1, 0);
    put16(&p, 0x4000);      /* 0x40: extended label type, obsolete */
    put16(&p, 15);
    put16(&p, 1);
    put32(&p, 1);
    put16(&p, 0);
    uint32_t ttl, neg;
    cr_assert_eq(mx_wire_ttls(p.b, p.len, &ttl, &neg), -1);
}

Test(mx, wire_ttls_do_not_follow_pointer_loops)
{
    struct pkt p;
    header(&p, 0, 1, 0);
    /* The answer's name points at itself: skipping takes two octets and
     * never follows it. */
    size_t at = p.len;
    put16(&p, 0xc000 | (unsigned)at);
    put16(&p, 15);
    put16(&p, 1);
    put32(&p, 77);
    put16(&p, 0);
    uint32_t ttl, neg;
    cr_assert_eq(mx_wire_ttls(p.b, p.len, &ttl, &neg), 0);
    cr_assert_eq(ttl, 77);
}

Test(mx, cache_seconds_are_clamped)
{
    cr_assert_eq(mx_cache_seconds(0), MX_TTL_MIN);
    cr_assert_eq(mx_cache_seconds(300), 300);
    cr_assert_eq(mx_cache_seconds(86400), MX_TTL_MAX);
    cr_assert_eq(mx_cache_seconds(UINT32_MAX), MX_TTL_NEGATIVE);
}

/* --- results --------------------------------------------------------------- */

static struct netaddr
v4(uint8_t last)
{
    struct netaddr a;
    memset(&a, 0, sizeof a);
    a.family = AF_INET;
    a.bytes[0] = 192;
    a.bytes[1] = 0;
    a.bytes[2] = 2;
    a.bytes[3] = last;
    return a;
}

Test(mx, host_addresses_are_deduplicated_and_capped)
{
    struct mx_result res;
    memset(&res, 0, sizeof res);
    struct mx_host *h = mx_result_add_host(&res, "mx.example", 10);
    struct netaddr a = v4(1);
    cr_assert(mx_host_add_addr(h, &a));
    cr_assert_not(mx_host_add_addr(h, &a));
    for (int i = 2; i < 40; i++) {
        a = v4((uint8_t)i);
        mx_host_add_addr(h, &a);
    }
    cr_assert_eq(h->naddrs, MX_MAX_ADDRS);
    mx_result_clear(&res);
    cr_assert_eq(res.nhosts, 0);
    cr_assert_null(res.hosts);
}

Test(mx, finish_drops_hosts_without_addresses_and_keeps_order)
{
    struct mx_result res;
    memset(&res, 0, sizeof res);
    mx_result_add_host(&res, "a.example", 10);
    mx_result_add_host(&res, "b.example", 20);
    mx_result_add_host(&res, "c.example", 30);
    mx_result_add_host(&res, "d.example", 40);
    struct netaddr a1 = v4(1), a2 = v4(2);
    mx_host_add_addr(&res.hosts[1], &a1);
    mx_host_add_addr(&res.hosts[3], &a2);
    enum mx_answer ans[4][2] = {
        { MX_ANSWER_NXDOMAIN, MX_ANSWER_NXDOMAIN },
        { MX_ANSWER_RECORDS, MX_ANSWER_NODATA },
        { MX_ANSWER_TIMEOUT, MX_ANSWER_TIMEOUT },
        { MX_ANSWER_RECORDS, MX_ANSWER_NODATA },
    };
    mx_result_finish(&res, (const enum mx_answer(*)[2])ans, "example", false);
    cr_assert_eq(res.status, MX_OK);
    cr_assert_eq(res.nhosts, 2);
    cr_assert_str_eq(res.hosts[0].name, "b.example");
    cr_assert_str_eq(res.hosts[1].name, "d.example");
    cr_assert_str_eq(res.dsn, "");
    mx_result_clear(&res);
}

Test(mx, mx_hosts_without_any_address_are_temporary)
{
    struct mx_result res;
    memset(&res, 0, sizeof res);
    mx_result_add_host(&res, "a.example", 10);
    enum mx_answer ans[1][2] = { { MX_ANSWER_NXDOMAIN, MX_ANSWER_NXDOMAIN } };
    mx_result_finish(&res, (const enum mx_answer(*)[2])ans, "example", false);
    cr_assert_eq(res.status, MX_TEMPORARY);
    cr_assert_str_eq(res.dsn, "4.4.3");
    cr_assert_eq(res.nhosts, 0);
    cr_assert(strstr(res.text, "a.example") != NULL, "%s", res.text);
    mx_result_clear(&res);
}

Test(mx, no_mx_and_no_address_is_permanent)
{
    struct mx_result res;
    memset(&res, 0, sizeof res);
    res.implicit = true;
    mx_result_add_host(&res, "example", 0);
    enum mx_answer ans[1][2] = { { MX_ANSWER_NODATA, MX_ANSWER_NXDOMAIN } };
    mx_result_finish(&res, (const enum mx_answer(*)[2])ans, "example", false);
    cr_assert_eq(res.status, MX_PERMANENT);
    cr_assert_str_eq(res.dsn, "5.4.4");
    cr_assert(res.implicit);
    mx_result_clear(&res);
}

Test(mx, implicit_mx_with_a_failed_address_query_is_temporary)
{
    struct mx_result res;
    memset(&res, 0, sizeof res);
    res.implicit = true;
    mx_result_add_host(&res, "example", 0);
    enum mx_answer ans[1][2] = { { MX_ANSWER_SERVFAIL, MX_ANSWER_NODATA } };
    mx_result_finish(&res, (const enum mx_answer(*)[2])ans, "example", false);
    cr_assert_eq(res.status, MX_TEMPORARY);
    cr_assert_str_eq(res.dsn, "4.4.3");
    mx_result_clear(&res);
}

Test(mx, next_hop_without_address_is_temporary)
{
    struct mx_result res;
    memset(&res, 0, sizeof res);
    mx_result_add_host(&res, "relay.example", 0);
    enum mx_answer ans[1][2] = { { MX_ANSWER_NXDOMAIN, MX_ANSWER_NXDOMAIN } };
    mx_result_finish(&res, (const enum mx_answer(*)[2])ans, "relay.example", true);
    cr_assert_eq(res.status, MX_TEMPORARY);
    cr_assert(strstr(res.text, "next hop") != NULL, "%s", res.text);
    mx_result_clear(&res);
}

Test(mx, copy_is_deep_and_free_returns_null)
{
    struct mx_result res;
    memset(&res, 0, sizeof res);
    struct mx_host *h = mx_result_add_host(&res, "mx.example", 5);
    struct netaddr a = v4(9);
    mx_host_add_addr(h, &a);
    struct mx_result *c = mx_result_copy(&res);
    mx_result_clear(&res);
    cr_assert_eq(c->nhosts, 1);
    cr_assert_str_eq(c->hosts[0].name, "mx.example");
    cr_assert_eq(c->hosts[0].preference, 5);
    cr_assert_eq(c->hosts[0].naddrs, 1);
    cr_assert_eq(c->hosts[0].addrs[0].bytes[3], 9);
    cr_assert_null(mx_result_free(c));
}

Test(mx, fail_sets_status_and_text)
{
    struct mx_result res;
    memset(&res, 0, sizeof res);
    mx_result_add_host(&res, "x.example", 1);
    mx_result_fail(&res, MX_PERMANENT, "5.1.10", "%s does not accept mail (null MX)", "ex");
    cr_assert_eq(res.status, MX_PERMANENT);
    cr_assert_str_eq(res.dsn, "5.1.10");
    cr_assert_str_eq(res.text, "ex does not accept mail (null MX)");
    cr_assert_eq(res.nhosts, 0);
}

Test(mx, every_answer_has_a_name_and_a_text)
{
    for (int a = MX_ANSWER_RECORDS; a <= MX_ANSWER_ERROR; a++) {
        cr_assert_str_neq(mx_answer_name((enum mx_answer)a), "?");
        cr_assert_str_neq(mx_answer_text((enum mx_answer)a), "?");
    }
}

Test(mx, keeps_exchanges_that_are_addresses)
{
    struct mx_record recs[3] = { rec("2001:DB8::1", 10), rec("192.0.2.7", 20),
                                 rec("[192.0.2.8]", 30) };
    uint64_t rng = 5;
    size_t n = mx_order(recs, 3, &rng);
    cr_assert_eq(n, 2);     /* brackets are not DNS name syntax */
    cr_assert_str_eq(recs[0].name, "2001:db8::1");
    cr_assert_str_eq(recs[1].name, "192.0.2.7");
}
