/*
 * Tests for core/address: RFC 5321 paths and the relay decision.
 * RELIABILITY rows 11 (shell/expansion bait), 17 (lengths), 26 (NUL),
 * 27 (UTF-8), 35-37 (relay).
 * Inputs are placed against an inaccessible page, so reading one octet past
 * len crashes the test. Parameter structs hold their text inline: Criterion
 * re-executes the binary per case, so pointers into the parent would dangle.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <string.h>

#include "address.h"
#include "guarded.h"

static enum address_status
parse(const char *s, size_t n, bool allow_null, bool smtputf8, struct mailbox *m,
      size_t *consumed)
{
    return address_parse_path(guarded(s, n), n, allow_null, smtputf8, m, consumed);
}

static enum address_status
parse_str(const char *s, struct mailbox *m)
{
    size_t consumed;
    return parse(s, strlen(s), false, false, m, &consumed);
}

static void
assert_cleared(const struct mailbox *m, const char *what)
{
    static const struct mailbox zero;
    cr_assert_arr_eq(m, &zero, sizeof zero, "%s: mailbox not cleared", what);
}

/* ---- accepted paths ---- */

struct ok_case {
    char in[96];
    bool smtputf8;
    char addr[96];
    char domain_lc[64];
    bool literal, quoted, route_chars, utf8;
};

#define OK(in_, addr_, dom_, ...) { .in = in_, .addr = addr_, .domain_lc = dom_, __VA_ARGS__ }

ParameterizedTestParameters(address, parses_valid_paths)
{
    static struct ok_case cases[] = {
        OK("<user@example.com>", "user@example.com", "example.com"),
        OK("<User.Name@Example.COM>", "User.Name@Example.COM", "example.com"),
        OK("<victim@EXT.>", "victim@EXT.", "ext"),
        OK("<a-b+tag@x-y.z9>", "a-b+tag@x-y.z9", "x-y.z9"),
        OK("<1@2.3>", "1@2.3", "2.3"),
        OK("<\"john doe\"@example.com>", "\"john doe\"@example.com", "example.com",
           .quoted = true),
        OK("<\"a\\\"b\"@x>", "\"a\\\"b\"@x", "x", .quoted = true),
        OK("<\"a>b\"@x>", "\"a>b\"@x", "x", .quoted = true),
        OK("<\"\"@x>", "\"\"@x", "x", .quoted = true),
        OK("<user@[192.0.2.1]>", "user@[192.0.2.1]", "[192.0.2.1]", .literal = true),
        OK("<user@[IPv6:2001:DB8::1]>", "user@[IPv6:2001:DB8::1]", "[ipv6:2001:db8::1]",
           .literal = true),
        OK("<user@[ipv6:::ffff:192.0.2.1]>", "user@[ipv6:::ffff:192.0.2.1]",
           "[ipv6:::ffff:192.0.2.1]", .literal = true),
        /* RFC 5321 §4.1.1.3: source routes are accepted and dropped. */
        OK("<@a.example,@b.example:user@c.example>", "user@c.example", "c.example"),
        OK("<@ours:victim@ext>", "victim@ext", "ext"),
        /* Row 36 shapes that parse; relay_check must still refuse them. */
        OK("<victim%ext@ours>", "victim%ext@ours", "ours", .route_chars = true),
        OK("<ext!victim@ours>", "ext!victim@ours", "ours", .route_chars = true),
        OK("<\"victim@ext\"@ours>", "\"victim@ext\"@ours", "ours",
           .quoted = true, .route_chars = true),
        OK("<\"victim\\@ext\"@ours>", "\"victim\\@ext\"@ours", "ours",
           .quoted = true, .route_chars = true),
        /* Row 11: legal atext, kept as opaque strings, byte for byte. */
        OK("<`id`@x>", "`id`@x", "x"),
        OK("<${run{/bin/sh}}@x>", "${run{/bin/sh}}@x", "x"),
        OK("<a|b&c'd@x>", "a|b&c'd@x", "x"),
        /* Row 27: UTF-8 with SMTPUTF8; only ASCII is lowercased. */
        OK("<\xce\xb4\xce\xbf\xce\xba@\xcf\x80.Gr>", "\xce\xb4\xce\xbf\xce\xba@\xcf\x80.Gr",
           "\xcf\x80.gr", .smtputf8 = true, .utf8 = true),
        OK("<\"\xc3\xa9 t\xc3\xa9\"@x>", "\"\xc3\xa9 t\xc3\xa9\"@x", "x",
           .smtputf8 = true, .quoted = true, .utf8 = true),
        OK("<user@example.com>", "user@example.com", "example.com", .smtputf8 = true),
    };
    return cr_make_param_array(struct ok_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct ok_case *c, address, parses_valid_paths)
{
    struct mailbox m;
    size_t n = strlen(c->in), consumed = 0;
    enum address_status st = parse(c->in, n, false, c->smtputf8, &m, &consumed);

    cr_assert_eq(st, ADDRESS_OK, "\"%s\" -> %d", c->in, st);
    cr_assert_eq(consumed, n, "\"%s\"", c->in);
    cr_assert_str_eq(m.addr, c->addr);
    cr_assert_eq(m.len, strlen(c->addr));
    cr_assert_str_eq(m.domain_lc, c->domain_lc);
    cr_assert_eq(m.addr[m.at], '@', "\"%s\" at=%u", c->in, m.at);
    cr_assert_eq(m.literal, c->literal, "\"%s\"", c->in);
    cr_assert_eq(m.quoted, c->quoted, "\"%s\"", c->in);
    cr_assert_eq(m.route_chars, c->route_chars, "\"%s\"", c->in);
    cr_assert_eq(m.utf8, c->utf8, "\"%s\"", c->in);
}

Test(address, null_path_when_allowed)
{
    struct mailbox m;
    size_t consumed;

    cr_assert_eq(parse("<> SIZE=1", 9, true, false, &m, &consumed), ADDRESS_OK);
    cr_assert_eq(consumed, 2);
    cr_assert_str_eq(m.addr, "");
    cr_assert_eq(m.len, 0);
    cr_assert_eq(m.at, 0);
    cr_assert_str_eq(m.domain_lc, "");
    cr_assert_not(address_is_postmaster(&m));
}

Test(address, rejects_null_path_when_not_allowed)
{
    struct mailbox m;
    size_t consumed;

    cr_assert_eq(parse("<>", 2, false, false, &m, &consumed), ADDRESS_SYNTAX);
}

Test(address, consumed_stops_at_closing_bracket)
{
    struct mailbox m;
    size_t consumed;

    cr_assert_eq(parse("<a@b> SIZE=100 BODY=8BITMIME", 28, false, false, &m, &consumed),
                 ADDRESS_OK);
    cr_assert_eq(consumed, 5);
    cr_assert_str_eq(m.addr, "a@b");
    /* What follows is the parameter parser's business, NUL included. */
    cr_assert_eq(parse("<a@b>\0x", 7, false, false, &m, &consumed), ADDRESS_OK);
    cr_assert_eq(consumed, 5);
}

Test(address, bare_postmaster_in_any_case)
{
    static const char *forms[] = { "<postmaster>", "<Postmaster>", "<POSTMASTER>" };
    struct mailbox m;

    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(parse_str(forms[i], &m), ADDRESS_OK, "%s", forms[i]);
        cr_assert_eq(m.at, m.len);
        cr_assert_eq(m.len, 10);
        cr_assert_str_eq(m.domain_lc, "");
        cr_assert(address_is_postmaster(&m), "%s", forms[i]);
    }
}

Test(address, postmaster_with_domain_is_not_bare_postmaster)
{
    struct mailbox m;

    cr_assert_eq(parse_str("<postmaster@example.com>", &m), ADDRESS_OK);
    cr_assert_not(address_is_postmaster(&m));
}

/* ---- refused paths ---- */

struct bad_case {
    char in[96];
    size_t len;              /* 0: strlen(in) */
    bool smtputf8;
    enum address_status status;
};

ParameterizedTestParameters(address, refuses_invalid_paths)
{
    static struct bad_case cases[] = {
        { "", 0, false, ADDRESS_SYNTAX },
        { "<", 0, false, ADDRESS_SYNTAX },
        { ">", 0, false, ADDRESS_SYNTAX },
        { "<>", 0, false, ADDRESS_SYNTAX },
        { "user@x", 0, false, ADDRESS_SYNTAX },
        { " <user@x>", 0, false, ADDRESS_SYNTAX },
        { "<user@x", 0, false, ADDRESS_SYNTAX },
        { "<user@x >", 0, false, ADDRESS_SYNTAX },
        { "< user@x>", 0, false, ADDRESS_SYNTAX },
        { "<user @x>", 0, false, ADDRESS_SYNTAX },
        { "<a b@x>", 0, false, ADDRESS_SYNTAX },
        { "<a(b)@x>", 0, false, ADDRESS_SYNTAX },
        { "<a,b@x>", 0, false, ADDRESS_SYNTAX },
        { "<user>", 0, false, ADDRESS_SYNTAX },
        { "<\"postmaster\">", 0, false, ADDRESS_SYNTAX },
        { "<@a:postmaster>", 0, false, ADDRESS_SYNTAX },
        { "<postmaster.x>", 0, false, ADDRESS_SYNTAX },
        { "<.a@x>", 0, false, ADDRESS_SYNTAX },
        { "<a.@x>", 0, false, ADDRESS_SYNTAX },
        { "<a..b@x>", 0, false, ADDRESS_SYNTAX },
        { "<@x>", 0, false, ADDRESS_SYNTAX },
        { "<a@>", 0, false, ADDRESS_SYNTAX },
        { "<a@.x>", 0, false, ADDRESS_SYNTAX },
        { "<a@x..>", 0, false, ADDRESS_SYNTAX },
        { "<a@x..y>", 0, false, ADDRESS_SYNTAX },
        { "<a@.>", 0, false, ADDRESS_SYNTAX },
        { "<a@-x>", 0, false, ADDRESS_SYNTAX },
        { "<a@x->", 0, false, ADDRESS_SYNTAX },
        { "<a@x-.y>", 0, false, ADDRESS_SYNTAX },
        { "<a@x_y>", 0, false, ADDRESS_SYNTAX },
        { "<a@x y>", 0, false, ADDRESS_SYNTAX },
        { "<\"unterminated@x>", 0, false, ADDRESS_SYNTAX },
        { "<\"a\\\"@x>", 0, false, ADDRESS_SYNTAX },
        { "<\"a\"b@x>", 0, false, ADDRESS_SYNTAX },
        { "<a\"b\"@x>", 0, false, ADDRESS_SYNTAX },
        { "<\"a\"@x\"b\">", 0, false, ADDRESS_SYNTAX },
        /* Row 36: an address with two '@' is not a mailbox. */
        { "<victim@ext@ours>", 0, false, ADDRESS_SYNTAX },
        /* Row 11: not a mailbox at all. */
        { "<;sleep 66;>", 0, false, ADDRESS_SYNTAX },
        { "<;sleep 66;@x>", 0, false, ADDRESS_SYNTAX },
        { "<a@$(id)>", 0, false, ADDRESS_SYNTAX },
        { "<a@`id`>", 0, false, ADDRESS_SYNTAX },
        /* Source routes. */
        { "<@a:>", 0, false, ADDRESS_SYNTAX },
        { "<@a,b:c@d>", 0, false, ADDRESS_SYNTAX },
        { "<@a;c@d>", 0, false, ADDRESS_SYNTAX },
        { "<@a c@d>", 0, false, ADDRESS_SYNTAX },
        { "<@[1.2.3.4]:c@d>", 0, false, ADDRESS_SYNTAX },
        { "<@:c@d>", 0, false, ADDRESS_SYNTAX },
        { "<@a,:c@d>", 0, false, ADDRESS_SYNTAX },
        /* Address literals. */
        { "<a@[]>", 0, false, ADDRESS_SYNTAX },
        { "<a@[1.2.3]>", 0, false, ADDRESS_SYNTAX },
        { "<a@[1.2.3.256]>", 0, false, ADDRESS_SYNTAX },
        { "<a@[1.2.3.4.5]>", 0, false, ADDRESS_SYNTAX },
        { "<a@[::1]>", 0, false, ADDRESS_SYNTAX },
        { "<a@[IPv6:1.2.3.4]>", 0, false, ADDRESS_SYNTAX },
        { "<a@[IPv6:]>", 0, false, ADDRESS_SYNTAX },
        { "<a@[IPv6:fe80::1%eth0]>", 0, false, ADDRESS_SYNTAX },
        { "<a@[x-tag:stuff]>", 0, false, ADDRESS_SYNTAX },
        { "<a@[1.2.3.4]x>", 0, false, ADDRESS_SYNTAX },
        { "<a@[1.2.3.4>", 0, false, ADDRESS_SYNTAX },
        { "<a@[ 1.2.3.4]>", 0, false, ADDRESS_SYNTAX },
        { "<a@x.[1.2.3.4]>", 0, false, ADDRESS_SYNTAX },
        { "<a@[\xc3\xa9]>", 0, true, ADDRESS_SYNTAX },
        /* Row 26 and CR/LF: never a place to cut the address short. */
        { "<a@x\0y>", 7, false, ADDRESS_SYNTAX },
        { "<a\0@x>", 6, false, ADDRESS_SYNTAX },
        { "<\0a@x>", 6, false, ADDRESS_SYNTAX },
        { "<a@x\0>", 6, false, ADDRESS_SYNTAX },
        { "<\"a\0b\"@x>", 9, false, ADDRESS_SYNTAX },
        { "<\"a\\\0\"@x>", 9, false, ADDRESS_SYNTAX },
        { "<a@[1.2.3.4\0]>", 14, false, ADDRESS_SYNTAX },
        { "<@a\0:b@c>", 9, false, ADDRESS_SYNTAX },
        { "<a@x\r\n>", 0, false, ADDRESS_SYNTAX },
        { "<a@x\r>", 0, false, ADDRESS_SYNTAX },
        { "<a@x\n>", 0, false, ADDRESS_SYNTAX },
        { "<\"a\r\nb\"@x>", 0, false, ADDRESS_SYNTAX },
        { "<\"a\\\r\"@x>", 0, false, ADDRESS_SYNTAX },
        { "<\"a\tb\"@x>", 0, false, ADDRESS_SYNTAX },
        { "<a\x7f@x>", 0, false, ADDRESS_SYNTAX },
        /* Row 27: 8-bit without SMTPUTF8, invalid UTF-8 with it. */
        { "<\xc3\xa9@x>", 0, false, ADDRESS_NEEDS_SMTPUTF8 },
        { "<a@\xc3\xa9.x>", 0, false, ADDRESS_NEEDS_SMTPUTF8 },
        { "<\"\xc3\xa9\"@x>", 0, false, ADDRESS_NEEDS_SMTPUTF8 },
        { "<\xc0\xaf@x>", 0, false, ADDRESS_NEEDS_SMTPUTF8 },
        { "<\xc0\xaf@x>", 0, true, ADDRESS_BAD_UTF8 },
        { "<a\xed\xa0\x80@x>", 0, true, ADDRESS_BAD_UTF8 },
        { "<a@\xf4\x90\x80\x80.x>", 0, true, ADDRESS_BAD_UTF8 },
        { "<a\xc3@x>", 0, true, ADDRESS_BAD_UTF8 },
        { "<a\xe2\x82@x>", 0, true, ADDRESS_BAD_UTF8 },
        { "<a\x80@x>", 0, true, ADDRESS_BAD_UTF8 },
        { "<\"\xff\"@x>", 0, true, ADDRESS_BAD_UTF8 },
        { "<@\xc3:a@x>", 0, true, ADDRESS_BAD_UTF8 },
        { "<\"\\\xc3\xa9\"@x>", 0, true, ADDRESS_SYNTAX },
        /* Length is judged on len, not on what lies beyond it. */
        { "<a@x>", 4, false, ADDRESS_SYNTAX },
        { "<a@x>", 1, false, ADDRESS_SYNTAX },
        { "<\"a\"@x>", 3, false, ADDRESS_SYNTAX },
        { "<a@[1.2.3.4]>", 11, false, ADDRESS_SYNTAX },
    };
    return cr_make_param_array(struct bad_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct bad_case *c, address, refuses_invalid_paths)
{
    struct mailbox m;
    size_t n = c->len ? c->len : strlen(c->in), consumed = 99;

    memset(&m, 0x5a, sizeof m);
    enum address_status st = parse(c->in, n, false, c->smtputf8, &m, &consumed);
    cr_assert_eq(st, c->status, "\"%s\" -> %d, want %d", c->in, st, c->status);
    cr_assert_eq(consumed, 0);
    assert_cleared(&m, c->in);
}

Test(address, accepts_null_consumed_pointer)
{
    struct mailbox m;

    cr_assert_eq(address_parse_path("<a@b>", 5, false, false, &m, NULL), ADDRESS_OK);
    cr_assert_eq(address_parse_path("<a@b", 4, false, false, &m, NULL), ADDRESS_SYNTAX);
}

/* ---- row 17: length limits ---- */

/* Builds "<" [route] local "@" domain ">" from lengths; labels stay <= 63 so
 * only the length under test can be wrong. Returns the path length. */
static size_t
build(char *buf, size_t route, size_t local, size_t domain)
{
    size_t n = 0;

    buf[n++] = '<';
    if (route > 0) {
        /* "@" + name + ":" */
        buf[n++] = '@';
        for (size_t i = 0; i < route - 2; i++)
            buf[n++] = (i % 50 == 49 && i + 1 < route - 2) ? '.' : 'r';
        buf[n++] = ':';
    }
    for (size_t i = 0; i < local; i++)
        buf[n++] = 'l';
    buf[n++] = '@';
    for (size_t i = 0; i < domain; i++)
        buf[n++] = (i % 50 == 49 && i + 1 < domain) ? '.' : 'd';
    buf[n++] = '>';
    return n;
}

struct length_case {
    char name[48];
    size_t route, local, domain;
    enum address_status status;
};

ParameterizedTestParameters(address, enforces_length_limits)
{
    static struct length_case cases[] = {
        { "local 64", 0, 64, 10, ADDRESS_OK },
        { "local 65", 0, 65, 10, ADDRESS_LOCAL_TOO_LONG },
        { "local 10000", 0, 10000, 10, ADDRESS_LOCAL_TOO_LONG },
        { "domain 188 in a 255-octet path", 0, 64, 188, ADDRESS_OK },
        { "domain 255", 0, 1, 255, ADDRESS_PATH_TOO_LONG },
        { "domain 256", 0, 1, 256, ADDRESS_DOMAIN_TOO_LONG },
        { "domain 10000", 0, 1, 10000, ADDRESS_DOMAIN_TOO_LONG },
        { "path 256", 0, 64, 189, ADDRESS_OK },
        { "path 257", 0, 64, 190, ADDRESS_PATH_TOO_LONG },
        { "path 257 through a source route", 60, 10, 184, ADDRESS_PATH_TOO_LONG },
        { "path 256 through a source route", 60, 10, 183, ADDRESS_OK },
    };
    return cr_make_param_array(struct length_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct length_case *c, address, enforces_length_limits)
{
    static char buf[20200];
    struct mailbox m;
    size_t n = build(buf, c->route, c->local, c->domain), consumed;

    enum address_status st = parse(buf, n, false, false, &m, &consumed);
    cr_assert_eq(st, c->status, "%s: got %d", c->name, st);
    if (st == ADDRESS_OK) {
        cr_assert_eq(consumed, n);
        cr_assert_eq(m.len, c->local + 1 + c->domain, "%s", c->name);
        cr_assert_eq(m.addr[m.len], '\0');
        cr_assert_eq(strlen(m.domain_lc), c->domain);
    } else {
        assert_cleared(&m, c->name);
    }
}

Test(address, rejects_local_part_of_65_octets)
{
    char buf[128];
    struct mailbox m;
    size_t consumed, n = build(buf, 0, 65, 11);

    cr_assert_eq(parse(buf, n, false, false, &m, &consumed), ADDRESS_LOCAL_TOO_LONG);
}

Test(address, rejects_quoted_local_part_of_65_octets_counting_quotes)
{
    char buf[128] = "<\"";
    struct mailbox m;
    size_t consumed;

    memset(buf + 2, 'q', 63);
    memcpy(buf + 65, "\"@x>", 4);
    cr_assert_eq(parse(buf, 69, false, false, &m, &consumed), ADDRESS_LOCAL_TOO_LONG);
    memcpy(buf + 64, "\"@x>", 4);
    cr_assert_eq(parse(buf, 68, false, false, &m, &consumed), ADDRESS_OK);
    cr_assert(m.quoted);
}

Test(address, rejects_domain_of_256_octets)
{
    char buf[300];
    struct mailbox m;
    size_t consumed, n = build(buf, 0, 1, 256);

    cr_assert_eq(parse(buf, n, false, false, &m, &consumed), ADDRESS_DOMAIN_TOO_LONG);
}

Test(address, rejects_domain_label_of_64_octets)
{
    char buf[128] = "<a@";
    struct mailbox m;
    size_t consumed;

    memset(buf + 3, 'd', 64);
    memcpy(buf + 67, ".x>", 3);
    cr_assert_eq(parse(buf, 70, false, false, &m, &consumed), ADDRESS_DOMAIN_TOO_LONG);
    /* 63 is fine. */
    memcpy(buf + 66, ".x>", 3);
    cr_assert_eq(parse(buf, 69, false, false, &m, &consumed), ADDRESS_OK);
}

Test(address, rejects_path_of_257_octets)
{
    char buf[300];
    struct mailbox m;
    size_t consumed, n = build(buf, 0, 64, 190);

    cr_assert_eq(n, 257);
    cr_assert_eq(parse(buf, n, false, false, &m, &consumed), ADDRESS_PATH_TOO_LONG);
}

Test(address, drops_trailing_dot_in_a_256_octet_path)
{
    /* "<a@" + 251 + "." + ">": the longest domain a legal path can carry
     * (a 255-octet domain never fits in 256), trailing dot included. */
    char buf[300];
    struct mailbox m;
    size_t consumed, n = build(buf, 0, 1, 251);

    buf[n - 1] = '.';
    buf[n++] = '>';
    cr_assert_eq(n, 256);
    cr_assert_eq(parse(buf, n, false, false, &m, &consumed), ADDRESS_OK);
    cr_assert_eq(strlen(m.domain_lc), 251);
    cr_assert_eq(m.len, 254);
}

/* ---- row 26: NUL anywhere ---- */

Test(address, rejects_nul_at_every_position_never_truncated)
{
    static const char path[] = "<@r.example:\"q s\"@[192.0.2.1]>";
    char buf[64];
    size_t n = sizeof path - 1;

    for (size_t i = 1; i + 1 < n; i++) {
        struct mailbox m;
        size_t consumed;
        for (size_t k = 0; k < 2; k++) {
            memcpy(buf, path, n);
            buf[i] = "\0\n"[k];
            enum address_status st = parse(buf, n, false, false, &m, &consumed);
            cr_assert_eq(st, ADDRESS_SYNTAX, "octet %zu at %zu -> %d", k, i, st);
            assert_cleared(&m, "nul");
        }
        /* Inserting instead of replacing must fail as well. */
        memcpy(buf, path, i);
        buf[i] = '\0';
        memcpy(buf + i + 1, path + i, n - i);
        cr_assert_eq(parse(buf, n + 1, false, false, &m, &consumed), ADDRESS_SYNTAX,
                     "inserted at %zu", i);
    }
}

Test(address, every_prefix_of_a_valid_path_is_a_syntax_error)
{
    static const char path[] = "<@a,@b:\"x\\\"y\"@[IPv6:2001:db8::1]>";
    size_t n = sizeof path - 1;

    for (size_t k = 0; k < n; k++) {
        struct mailbox m;
        size_t consumed;
        cr_assert_eq(parse(path, k, false, false, &m, &consumed), ADDRESS_SYNTAX, "%zu", k);
    }
}

/* ---- relay policy ---- */

#define OURS "ours.example, Second.Example."
#define NETS "192.0.2.0/24, 2001:db8::/32"

struct relay_case {
    char rcpt[96];
    char client[48];
    bool authenticated;
    enum relay_verdict verdict;
};

ParameterizedTestParameters(address, decides_relaying)
{
    static struct relay_case cases[] = {
        { "<user@ours.example>", "203.0.113.9", false, RELAY_OK_LOCAL },
        { "<USER@OURS.EXAMPLE.>", "203.0.113.9", false, RELAY_OK_LOCAL },
        { "<user@second.example>", "203.0.113.9", false, RELAY_OK_LOCAL },
        { "<\"user\"@ours.example>", "203.0.113.9", false, RELAY_OK_LOCAL },
        { "<@ext.example:user@ours.example>", "203.0.113.9", false, RELAY_OK_LOCAL },
        /* Row 35. */
        { "<victim@ext.example>", "203.0.113.9", false, RELAY_DENIED },
        { "<victim@ext.example>", "2001:db9::1", false, RELAY_DENIED },
        /* Row 36. */
        { "<victim%ext.example@ours.example>", "203.0.113.9", false, RELAY_DENIED },
        { "<\"victim@ext.example\"@ours.example>", "203.0.113.9", false, RELAY_DENIED },
        { "<\"victim%ext.example\"@ours.example>", "203.0.113.9", false, RELAY_DENIED },
        { "<@ours.example:victim@ext.example>", "203.0.113.9", false, RELAY_DENIED },
        { "<ext.example!victim@ours.example>", "203.0.113.9", false, RELAY_DENIED },
        { "<victim@[203.0.113.5]>", "203.0.113.9", false, RELAY_DENIED },
        { "<victim@[192.0.2.1]>", "203.0.113.9", false, RELAY_DENIED },
        { "<victim@EXT.>", "203.0.113.9", false, RELAY_DENIED },
        /* Exact domain match only. */
        { "<victim@sub.ours.example>", "203.0.113.9", false, RELAY_DENIED },
        { "<victim@ours.example.evil>", "203.0.113.9", false, RELAY_DENIED },
        { "<victim@xours.example>", "203.0.113.9", false, RELAY_DENIED },
        { "<victim@example>", "203.0.113.9", false, RELAY_DENIED },
        /* Row 37. */
        { "<postmaster>", "203.0.113.9", false, RELAY_OK_LOCAL },
        { "<PostMaster>", "203.0.113.9", false, RELAY_OK_LOCAL },
        { "<postmaster@ext.example>", "203.0.113.9", false, RELAY_DENIED },
        /* Trusted clients, by network or by authentication. */
        { "<victim@ext.example>", "192.0.2.7", false, RELAY_OK_TRUSTED },
        { "<victim@ext.example>", "::ffff:192.0.2.7", false, RELAY_OK_TRUSTED },
        { "<victim@ext.example>", "2001:db8::25", false, RELAY_OK_TRUSTED },
        { "<victim@ext.example>", "203.0.113.9", true, RELAY_OK_TRUSTED },
        { "<victim%ext@ours.example>", "192.0.2.7", false, RELAY_OK_TRUSTED },
        { "<victim@[203.0.113.5]>", "203.0.113.9", true, RELAY_OK_TRUSTED },
        { "<user@ours.example>", "192.0.2.7", false, RELAY_OK_LOCAL },
    };
    return cr_make_param_array(struct relay_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct relay_case *c, address, decides_relaying)
{
    struct relay_policy pol;
    struct mailbox m;
    struct netaddr client;
    char err[128];

    cr_assert_eq(relay_policy_init(&pol, OURS, NETS, err, sizeof err), 0, "%s", err);
    cr_assert_eq(parse_str(c->rcpt, &m), ADDRESS_OK, "%s", c->rcpt);
    cr_assert_eq(netaddr_parse(&client, c->client), 0);
    enum relay_verdict v = relay_check(&pol, &m, &client, c->authenticated);
    cr_assert_eq(v, c->verdict, "%s from %s: %d", c->rcpt, c->client, v);
    relay_policy_free(&pol);
}

Test(address, two_at_signs_never_reach_the_relay_check)
{
    struct mailbox m;

    cr_assert_eq(parse_str("<victim@ext.example@ours.example>", &m), ADDRESS_SYNTAX);
}

Test(address, relay_denied_for_unknown_client)
{
    struct relay_policy pol;
    struct mailbox m;
    char err[64];

    cr_assert_eq(relay_policy_init(&pol, "ours.example", "0.0.0.0/0", err, sizeof err), 0);
    cr_assert_eq(parse_str("<victim@ext.example>", &m), ADDRESS_OK);
    cr_assert_eq(relay_check(&pol, &m, NULL, false), RELAY_DENIED);
    relay_policy_free(&pol);
}

Test(address, relay_check_does_not_trust_flags_alone)
{
    /* A mailbox built by hand, with the flags left false. */
    struct relay_policy pol;
    struct mailbox m = { 0 };
    struct netaddr client;
    char err[64];

    cr_assert_eq(relay_policy_init(&pol, "ours.example", "", err, sizeof err), 0);
    cr_assert_eq(netaddr_parse(&client, "203.0.113.9"), 0);
    strcpy(m.addr, "victim%ext@ours.example");
    m.len = (uint16_t)strlen(m.addr);
    m.at = 10;
    strcpy(m.domain_lc, "ours.example");
    cr_assert_eq(relay_check(&pol, &m, &client, false), RELAY_DENIED);
    strcpy(m.addr, "victim@[1.2.3.4]");
    m.len = (uint16_t)strlen(m.addr);
    m.at = 6;
    strcpy(m.domain_lc, "[1.2.3.4]");
    cr_assert_eq(relay_check(&pol, &m, &client, false), RELAY_DENIED);
    relay_policy_free(&pol);
}

Test(address, empty_policy_relays_nothing_but_postmaster)
{
    struct relay_policy pol;
    struct mailbox m;
    struct netaddr client;
    char err[64];

    cr_assert_eq(relay_policy_init(&pol, "", "", err, sizeof err), 0);
    cr_assert_eq(netaddr_parse(&client, "127.0.0.1"), 0);
    cr_assert_not(relay_client_trusted(&pol, &client));
    cr_assert_eq(parse_str("<user@localhost>", &m), ADDRESS_OK);
    cr_assert_eq(relay_check(&pol, &m, &client, false), RELAY_DENIED);
    cr_assert_eq(parse_str("<postmaster>", &m), ADDRESS_OK);
    cr_assert_eq(relay_check(&pol, &m, &client, false), RELAY_OK_LOCAL);
    relay_policy_free(&pol);
    cr_assert_eq(relay_policy_init(&pol, NULL, NULL, err, sizeof err), 0);
    relay_policy_free(&pol);
}

Test(address, policy_canonicalises_domains)
{
    struct relay_policy pol;
    char err[64];

    cr_assert_eq(relay_policy_init(&pol, " A.Example.,b.example\n\tc.example ", "::1",
                                   err, sizeof err), 0, "%s", err);
    cr_assert_eq(pol.ndomains, 3);
    cr_assert_str_eq(pol.domains[0], "a.example");
    cr_assert_str_eq(pol.domains[1], "b.example");
    cr_assert_str_eq(pol.domains[2], "c.example");
    cr_assert_eq(pol.networks.count, 1);
    relay_policy_free(&pol);
    cr_assert_eq(pol.ndomains, 0);
    cr_assert_null(pol.domains);
}

struct policy_error_case {
    char domains[64];
    char networks[64];
};

ParameterizedTestParameters(address, refuses_bad_policy)
{
    static struct policy_error_case cases[] = {
        { "ours..example", "" },
        { ".ours.example", "" },
        { "[192.0.2.1]", "" },
        { "user@ours.example", "" },
        { "*.ours.example", "" },
        { "-ours.example", "" },
        { "ours.example", "10.0.0.0/33" },
        { "ours.example", "not-a-network" },
        { "ours.example", "10.1.2.3/8" },
    };
    return cr_make_param_array(struct policy_error_case, cases,
                               sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct policy_error_case *c, address, refuses_bad_policy)
{
    struct relay_policy pol;
    char err[128] = "";

    cr_assert_eq(relay_policy_init(&pol, c->domains, c->networks, err, sizeof err), -1,
                 "accepted %s / %s", c->domains, c->networks);
    cr_assert_neq(err[0], '\0');
    cr_assert_eq(pol.ndomains, 0);
    cr_assert_null(pol.domains);
    cr_assert_null(pol.networks.items);
    relay_policy_free(&pol);
}
