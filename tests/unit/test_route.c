/*
 * Tests for core/route: next-hop syntax (relayhost), transport_map parsing
 * and lookup order, destination_policy parsing and its cascade over config
 * defaults, and errors with line numbers.
 * Parameter structs hold their text inline: Criterion re-executes the test
 * binary per case, so pointers into the parent's image would dangle.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "route.h"

/* ---- next hops ---- */

struct hop_case {
    char text[96];
    int ok;
    char host[64];
    unsigned port;
    int mx;
    int is_address;
    char formatted[96];
};

ParameterizedTestParameters(route, parses_next_hops)
{
    static struct hop_case cases[] = {
        { "smarthost.example.com", 1, "smarthost.example.com", 0, 1, 0, "smarthost.example.com" },
        { "Example.COM:2525", 1, "example.com", 2525, 1, 0, "example.com:2525" },
        { "example.com.", 1, "example.com", 0, 1, 0, "example.com" },
        { "[mx.example.com]", 1, "mx.example.com", 0, 0, 0, "[mx.example.com]" },
        { "[mx.example.com]:587", 1, "mx.example.com", 587, 0, 0, "[mx.example.com]:587" },
        { "[192.0.2.1]", 1, "192.0.2.1", 0, 0, 1, "[192.0.2.1]" },
        { "[192.0.2.1]:25", 1, "192.0.2.1", 25, 0, 1, "[192.0.2.1]:25" },
        { "192.0.2.1:2525", 1, "192.0.2.1", 2525, 0, 1, "[192.0.2.1]:2525" },
        { "192.0.2.1", 1, "192.0.2.1", 0, 0, 1, "[192.0.2.1]" },
        { "[2001:db8::1]:25", 1, "2001:db8::1", 25, 0, 1, "[2001:db8::1]:25" },
        { "[2001:DB8::1]", 1, "2001:db8::1", 0, 0, 1, "[2001:db8::1]" },
        { "[IPv6:2001:db8::1]:26", 1, "2001:db8::1", 26, 0, 1, "[2001:db8::1]:26" },
        { "[::1]:10025", 1, "::1", 10025, 0, 1, "[::1]:10025" },
        { "  relay.example.net  ", 1, "relay.example.net", 0, 1, 0, "relay.example.net" },
        { "localhost:65535", 1, "localhost", 65535, 1, 0, "localhost:65535" },
        { "mail_1.example.com", 1, "mail_1.example.com", 0, 1, 0, "mail_1.example.com" },

        { "", 0, "", 0, 0, 0, "" },
        { "   ", 0, "", 0, 0, 0, "" },
        { "2001:db8::1", 0, "", 0, 0, 0, "" },
        { "2001:db8::1:25", 0, "", 0, 0, 0, "" },
        { "[192.0.2.1", 0, "", 0, 0, 0, "" },
        { "[]", 0, "", 0, 0, 0, "" },
        { "[]:25", 0, "", 0, 0, 0, "" },
        { "[192.0.2.1]25", 0, "", 0, 0, 0, "" },
        { "[192.0.2.1]:", 0, "", 0, 0, 0, "" },
        { "host:", 0, "", 0, 0, 0, "" },
        { "host:0", 0, "", 0, 0, 0, "" },
        { "host:65536", 0, "", 0, 0, 0, "" },
        { "host:25x", 0, "", 0, 0, 0, "" },
        { "host:-25", 0, "", 0, 0, 0, "" },
        { ":25", 0, "", 0, 0, 0, "" },
        { "bad..example.com", 0, "", 0, 0, 0, "" },
        { ".example.com", 0, "", 0, 0, 0, "" },
        { "exa mple.com", 0, "", 0, 0, 0, "" },
        { "10.0.0", 0, "", 0, 0, 0, "" },
        { "[IPv6:192.0.2.1]", 0, "", 0, 0, 0, "" },
        { "[999.1.1.1]", 0, "", 0, 0, 0, "" },
        { "h\xc3\xa9.example", 0, "", 0, 0, 0, "" },
        { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com", 0, "",
          0, 0, 0, "" },
    };
    return cr_make_param_array(struct hop_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct hop_case *c, route, parses_next_hops)
{
    struct route_hop hop;
    char err[256] = "", buf[300];
    int rc = route_hop_parse(&hop, c->text, err, sizeof err);
    if (!c->ok) {
        cr_assert_eq(rc, -1, "'%s' accepted", c->text);
        cr_assert_neq(err[0], '\0');
        return;
    }
    cr_assert_eq(rc, 0, "'%s': %s", c->text, err);
    cr_assert_str_eq(hop.host, c->host);
    cr_assert_eq(hop.port, c->port);
    cr_assert_eq(hop.mx_lookup, (bool)c->mx, "'%s' mx", c->text);
    cr_assert_eq(hop.is_address, (bool)c->is_address, "'%s' address", c->text);
    cr_assert_str_eq(route_hop_format(&hop, buf, sizeof buf), c->formatted);
    /* The formatted form parses back to the same hop. */
    struct route_hop again;
    cr_assert_eq(route_hop_parse(&again, buf, err, sizeof err), 0);
    cr_assert_eq(memcmp(&again, &hop, sizeof hop), 0);
}

/* ---- transport_map ---- */

static struct route_table *
table(const char *text)
{
    struct route_table *t = NULL;
    char err[256];
    int rc = route_table_parse(&t, text, strlen(text), "transport_map", err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
    return t;
}

static const char *
lookup(const struct route_table *t, const char *domain, char *buf, size_t size)
{
    struct route_hop hop;
    if (route_lookup(t, domain, &hop) == ROUTE_DEFAULT)
        return "default";
    return route_hop_format(&hop, buf, size);
}

static const char transport_text[] =
    "# transport_map for the tests\n"
    "example.com        [mx1.example.com]:2525\n"
    ".example.com       smtp:[10.0.0.2]\n"
    "deep.sub.example.com  10.0.0.3:26   # inline comment\n"
    ".sub.example.com   [10.0.0.4]\n"
    "\n"
    "  # an indented comment\n"
    "mx.example.org     smtp:\n"
    ".example.org       relay.example.org\n"
    "EXAMPLE.NET.       [2001:db8::25]:25\n"
    "[192.0.2.9]        [127.0.0.1]:2525\n"
    "*                  [smarthost.example]:587\n";

struct lookup_case {
    char domain[64];
    char expect[64];
};

ParameterizedTestParameters(route, transport_lookup_order)
{
    static struct lookup_case cases[] = {
        /* exact beats .parent */
        { "example.com", "[mx1.example.com]:2525" },
        { "EXAMPLE.com.", "[mx1.example.com]:2525" },
        /* .example.com: subdomains only */
        { "a.example.com", "[10.0.0.2]" },
        { "a.b.c.example.com", "[10.0.0.2]" },
        /* nearest parent first */
        { "x.sub.example.com", "[10.0.0.4]" },
        { "sub.example.com", "[10.0.0.2]" },
        { "deep.sub.example.com", "[10.0.0.3]:26" },
        { "z.deep.sub.example.com", "[10.0.0.4]" },
        /* "smtp:" is no override, and stops the search */
        { "mx.example.org", "default" },
        { "a.example.org", "relay.example.org" },
        { "example.org", "[smarthost.example]:587" },
        { "example.net", "[2001:db8::25]:25" },
        { "[192.0.2.9]", "[127.0.0.1]:2525" },
        /* not a suffix match on text: "notexample.com" is not under example.com */
        { "notexample.com", "[smarthost.example]:587" },
        { "other.test", "[smarthost.example]:587" },
        { "", "[smarthost.example]:587" },
    };
    return cr_make_param_array(struct lookup_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct lookup_case *c, route, transport_lookup_order)
{
    struct route_table *t = table(transport_text);
    char buf[300];
    cr_assert_str_eq(lookup(t, c->domain, buf, sizeof buf), c->expect, "domain '%s'",
                     c->domain);
    route_table_free(t);
}

Test(route, transport_without_star_defaults)
{
    struct route_table *t = table("example.com [10.0.0.1]\n");
    char buf[300];
    cr_assert_eq(route_table_count(t), 1);
    cr_assert_str_eq(lookup(t, "other.com", buf, sizeof buf), "default");
    cr_assert_str_eq(lookup(t, "sub.example.com", buf, sizeof buf), "default");
    cr_assert_str_eq(lookup(NULL, "example.com", buf, sizeof buf), "default");
    route_table_free(t);
}

Test(route, empty_and_comment_only_tables_parse)
{
    struct route_table *t = table("");
    cr_assert_eq(route_table_count(t), 0);
    route_table_free(t);
    t = table("# nothing\n\n   \n\t# still nothing\n");
    cr_assert_eq(route_table_count(t), 0);
    route_table_free(t);
}

Test(route, continuation_lines_and_crlf)
{
    char buf[300];
    struct route_table *t = table("example.com\r\n"
                                  "   # comment between\r\n"
                                  "    [10.0.0.1]:2525\r\n"
                                  "example.org [10.0.0.2]");
    cr_assert_eq(route_table_count(t), 2);
    cr_assert_str_eq(lookup(t, "example.com", buf, sizeof buf), "[10.0.0.1]:2525");
    cr_assert_str_eq(lookup(t, "example.org", buf, sizeof buf), "[10.0.0.2]");
    route_table_free(t);
}

Test(route, text_need_not_be_nul_terminated)
{
    const char text[] = "example.com [10.0.0.1]\nexample.org [10.0.0.2]";
    struct route_table *t = NULL;
    char err[256], buf[300];
    /* Cut inside the second line's value: "[10.0.0." is an error... */
    cr_assert_eq(route_table_parse(&t, text, sizeof text - 3, "tm", err, sizeof err), -1);
    cr_assert_str_eq(err, "tm:2: missing ']' in '[10.0.0.'");
    /* ...and the first line alone is fine. */
    cr_assert_eq(route_table_parse(&t, text, 23, "tm", err, sizeof err), 0, "%s", err);
    cr_assert_eq(route_table_count(t), 1);
    cr_assert_str_eq(lookup(t, "example.com", buf, sizeof buf), "[10.0.0.1]");
    route_table_free(t);
}

struct error_case {
    char text[160];
    char error[128];
};

ParameterizedTestParameters(route, transport_errors_name_the_line)
{
    static struct error_case cases[] = {
        { "example.com\n", "tm:1: expected 'domain nexthop', got 1 field" },
        { "a.com [10.0.0.1]\nb.com [10.0.0.1] extra\n",
          "tm:2: expected 'domain nexthop', got 3 fields" },
        { "# c\n\na.com host:99999\n", "tm:3: bad port '99999'" },
        { "a.com [10.0.0.1]\nb..com [10.0.0.1]\n", "tm:2: bad domain 'b..com'" },
        { "a.com [10.0.0.1]\n\nA.COM [10.0.0.2]\n",
          "tm:3: duplicate entry for 'a.com' (also on line 1)" },
        { "  a.com [10.0.0.1]\n", "tm:1: continuation line with no entry before it" },
        { "a.com lmtp:unix\n", "tm:1: unsupported transport 'lmtp' (only smtp:)" },
        { "a.com 2001:db8::1\n", "tm:1: an IPv6 address needs brackets" },
        { "a.com [10.0.0.1\n", "tm:1: missing ']'" },
        { "x.com [10.0.0.1]\n.com\n [10.0.0.1] more\n",
          "tm:2: expected 'domain nexthop', got 3 fields" },
        { "* [10.0.0.1]\n* [10.0.0.2]\n", "tm:2: duplicate entry for '*' (also on line 1)" },
    };
    return cr_make_param_array(struct error_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct error_case *c, route, transport_errors_name_the_line)
{
    struct route_table *t = NULL;
    char err[256] = "";
    cr_assert_eq(route_table_parse(&t, c->text, strlen(c->text), "tm", err, sizeof err), -1,
                 "accepted: %s", c->text);
    cr_assert_null(t);
    cr_assert(strncmp(err, c->error, strlen(c->error)) == 0, "got '%s', want '%s'", err,
              c->error);
}

Test(route, nul_byte_is_an_error)
{
    const char text[] = "a.com [10.0.0.1]\nb.com\0 [10.0.0.1]\n";
    struct route_table *t = NULL;
    char err[256];
    cr_assert_eq(route_table_parse(&t, text, sizeof text - 1, "tm", err, sizeof err), -1);
    cr_assert_str_eq(err, "tm:2: NUL byte in the line");
}

/* ---- route_resolve ---- */

static const char *
resolve(const struct route_table *t, const char *relayhost, const char *domain, char *buf,
        size_t size)
{
    struct route_hop rh, out;
    char err[256];
    if (relayhost)
        cr_assert_eq(route_hop_parse(&rh, relayhost, err, sizeof err), 0, "%s", err);
    if (route_resolve(t, relayhost ? &rh : NULL, domain, &out) != 0)
        return "error";
    route_hop_format(&out, buf, size);
    if (out.mx_lookup)
        strncat(buf, " (mx)", size - strlen(buf) - 1);
    return buf;
}

Test(route, resolve_prefers_table_then_relayhost_then_mx)
{
    struct route_table *t = table("special.com [10.0.0.9]\nbymx.com smtp:\n");
    char buf[300];
    cr_assert_str_eq(resolve(t, "[relay.example]:587", "special.com", buf, sizeof buf),
                     "[10.0.0.9]");
    cr_assert_str_eq(resolve(t, "[relay.example]:587", "other.com", buf, sizeof buf),
                     "[relay.example]:587");
    /* "smtp:" means the default next hop, which is the relayhost (Postfix). */
    cr_assert_str_eq(resolve(t, "[relay.example]:587", "bymx.com", buf, sizeof buf),
                     "[relay.example]:587");
    cr_assert_str_eq(resolve(t, NULL, "Other.COM.", buf, sizeof buf), "other.com (mx)");
    cr_assert_str_eq(resolve(NULL, "relay.example", "x.org", buf, sizeof buf),
                     "relay.example (mx)");
    route_table_free(t);
}

Test(route, resolve_sends_address_literals_to_the_address)
{
    char buf[300];
    cr_assert_str_eq(resolve(NULL, NULL, "[192.0.2.7]", buf, sizeof buf), "[192.0.2.7]");
    cr_assert_str_eq(resolve(NULL, NULL, "[IPv6:2001:DB8::7]", buf, sizeof buf),
                     "[2001:db8::7]");
    cr_assert_str_eq(resolve(NULL, NULL, "[2001:db8::7]", buf, sizeof buf), "error");
    cr_assert_str_eq(resolve(NULL, NULL, "[IPv6:192.0.2.7]", buf, sizeof buf), "error");
    cr_assert_str_eq(resolve(NULL, NULL, "[192.0.2]", buf, sizeof buf), "error");
    cr_assert_str_eq(resolve(NULL, NULL, "[x-tag:foo]", buf, sizeof buf), "error");
    cr_assert_str_eq(resolve(NULL, NULL, "[192.0.2.7", buf, sizeof buf), "error");
}

/* ---- destination_policy ---- */

static struct route_policy *
policy(const char *text)
{
    struct route_policy *p = NULL;
    char err[256];
    int rc = route_policy_parse(&p, text, strlen(text), "destination_policy", err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
    return p;
}

struct rate_parse_case {
    char text[32];
    int ok;
    uint64_t count;
    uint64_t per_ms;
};

ParameterizedTestParameters(route, parses_rates)
{
    static struct rate_parse_case cases[] = {
        { "0", 1, 0, 1000 },          { "10", 1, 10, 1000 },      { "10/s", 1, 10, 1000 },
        { "600/m", 1, 600, 60000 },   { "600/min", 1, 600, 60000 },
        { "100/h", 1, 100, 3600000 }, { "2000/d", 1, 2000, 86400000 },
        { "1/hour", 1, 1, 3600000 },  { "1/day", 1, 1, 86400000 }, { "5/sec", 1, 5, 1000 },
        { "", 0, 0, 0 },              { "/s", 0, 0, 0 },          { "10/", 0, 0, 0 },
        { "10/w", 0, 0, 0 },          { "-1", 0, 0, 0 },          { "1.5", 0, 0, 0 },
        { "10 /s", 0, 0, 0 },         { "10/S", 0, 0, 0 },
        { "99999999999999999999", 0, 0, 0 },
    };
    return cr_make_param_array(struct rate_parse_case, cases,
                               sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct rate_parse_case *c, route, parses_rates)
{
    struct route_rate r;
    int rc = route_rate_parse(c->text, &r);
    if (!c->ok) {
        cr_assert_eq(rc, -1, "'%s' accepted", c->text);
        return;
    }
    cr_assert_eq(rc, 0, "'%s'", c->text);
    cr_assert_eq(r.count, c->count);
    cr_assert_eq(r.per_ms, c->per_ms);
}

Test(route, policy_defaults_come_from_config)
{
    struct config cfg;
    struct route_limits l;
    config_init(&cfg);
    cfg.max_message_rate = 50;
    route_policy_lookup(NULL, &cfg, "example.com", &l);
    cr_assert_eq(l.max_connections, 20);
    cr_assert_eq(l.max_messages_per_connection, 100);
    cr_assert_eq(l.max_rcpt_per_transaction, 100);
    cr_assert_eq(l.max_message_rate.count, 50);
    cr_assert_eq(l.max_message_rate.per_ms, 1000);
    cr_assert_eq(l.max_connection_rate.count, 0);
    config_free(&cfg);
}

Test(route, policy_overrides_cascade_from_general_to_specific)
{
    struct config cfg;
    struct route_limits l;
    config_init(&cfg);
    struct route_policy *p = policy(
        "# big providers\n"
        "gmail.com   max_connections=10 max_message_rate=100/m\n"
        "            max_rcpt_per_transaction=50\n"
        ".gmail.com  max_connections=2\n"
        ".com        max_messages_per_connection=500\n"
        "*           max_connection_rate=5 max_connections=8\n");
    cr_assert_eq(route_policy_count(p), 4);

    route_policy_lookup(p, &cfg, "Gmail.COM", &l);
    cr_assert_eq(l.max_connections, 10);                 /* exact beats * */
    cr_assert_eq(l.max_messages_per_connection, 500);    /* from .com */
    cr_assert_eq(l.max_rcpt_per_transaction, 50);        /* continuation line */
    cr_assert_eq(l.max_message_rate.count, 100);
    cr_assert_eq(l.max_message_rate.per_ms, 60000);
    cr_assert_eq(l.max_connection_rate.count, 5);        /* from * */

    route_policy_lookup(p, &cfg, "alt.gmail.com", &l);
    cr_assert_eq(l.max_connections, 2);
    cr_assert_eq(l.max_messages_per_connection, 500);
    cr_assert_eq(l.max_rcpt_per_transaction, 100);       /* config: exact line not applied */
    cr_assert_eq(l.max_message_rate.count, 0);

    route_policy_lookup(p, &cfg, "example.org", &l);
    cr_assert_eq(l.max_connections, 8);
    cr_assert_eq(l.max_messages_per_connection, 100);
    cr_assert_eq(l.max_connection_rate.count, 5);
    route_policy_free(p);
    config_free(&cfg);
}

Test(route, policy_sets_the_tls_level_per_destination)
{
    struct config cfg;
    struct route_limits l;
    config_init(&cfg);
    cr_assert_eq(cfg.smtp_tls_security_level, TLS_LEVEL_MAY);
    struct route_policy *p = policy("bank.example smtp_tls_security_level=verify\n"
                                    ".corp.example smtp_tls_security_level=encrypt\n"
                                    "legacy.example smtp_tls_security_level=none\n");
    route_policy_lookup(p, &cfg, "bank.example", &l);
    cr_assert_eq(l.smtp_tls_security_level, TLS_LEVEL_VERIFY);
    route_policy_lookup(p, &cfg, "mx.corp.example", &l);
    cr_assert_eq(l.smtp_tls_security_level, TLS_LEVEL_ENCRYPT);
    route_policy_lookup(p, &cfg, "legacy.example", &l);
    cr_assert_eq(l.smtp_tls_security_level, TLS_LEVEL_NONE);
    route_policy_lookup(p, &cfg, "other.example", &l);
    cr_assert_eq(l.smtp_tls_security_level, TLS_LEVEL_MAY);
    route_policy_free(p);
    struct route_policy *bad = NULL;
    char err[256];
    static const char text[] = "x.example smtp_tls_security_level=maybe\n";
    cr_assert_eq(route_policy_parse(&bad, text, sizeof text - 1, "dp", err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "smtp_tls_security_level"), "%s", err);
    config_free(&cfg);
}

ParameterizedTestParameters(route, policy_errors_name_the_line)
{
    static struct error_case cases[] = {
        { "example.com\n", "dp:1: expected 'domain key=value ...'" },
        { "a.com max_connections=1\nb.com max_conections=3\n",
          "dp:2: unknown key 'max_conections'" },
        { "a.com max_connections=0\n", "dp:1: bad value for max_connections: '0'" },
        { "a.com max_connections=\n", "dp:1: bad value for max_connections: ''" },
        { "a.com max_connections=x\n", "dp:1: bad value for max_connections: 'x'" },
        { "a.com max_connections=99999999999\n",
          "dp:1: bad value for max_connections: '99999999999'" },
        { "\n\na.com max_message_rate=10/w\n",
          "dp:3: bad value for max_message_rate: '10/w' (N, N/s, N/m, N/h or N/d)" },
        { "a.com max_connections=2 max_connections=3\n",
          "dp:1: max_connections given twice" },
        { "a.com max_connections\n", "dp:1: expected key=value, got 'max_connections'" },
        { "a.com =3\n", "dp:1: expected key=value, got '=3'" },
        { "a.com max_connections=2\nA.com. max_connections=3\n",
          "dp:2: duplicate entry for 'a.com' (also on line 1)" },
        { "a.com\n  max_connections=2\nbad_key! max_connections=1\n",
          "dp:3: bad domain 'bad_key!'" },
    };
    return cr_make_param_array(struct error_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct error_case *c, route, policy_errors_name_the_line)
{
    struct route_policy *p = NULL;
    char err[256] = "";
    cr_assert_eq(route_policy_parse(&p, c->text, strlen(c->text), "dp", err, sizeof err), -1,
                 "accepted: %s", c->text);
    cr_assert_null(p);
    cr_assert(strncmp(err, c->error, strlen(c->error)) == 0, "got '%s', want '%s'", err,
              c->error);
}

/* --- smtp_sasl_password_file ------------------------------------------------ */

static struct route_credentials *
creds(const char *text)
{
    struct route_credentials *t = NULL;
    char err[256];
    int rc = route_credentials_parse(&t, text, strlen(text), 25, "sasl_passwd", err, sizeof err);
    cr_assert_eq(rc, 0, "%s", err);
    return t;
}

static const char *
creds_user(const struct route_credentials *t, const char *nexthop, const char **pass)
{
    struct route_hop hop;
    char err[128];
    const char *user = NULL;
    cr_assert_eq(route_hop_parse(&hop, nexthop, err, sizeof err), 0, "%s", err);
    if (!route_credentials_lookup(t, &hop, 25, &user, pass))
        return NULL;
    return user;
}

Test(route, credentials_match_the_nexthop_as_written_with_the_port)
{
    struct route_credentials *t = creds("# smarthosts\n"
                                        "[relay.example]:587  relay:pa:ss:word\n"
                                        "[192.0.2.1]          other:pw2\n"
                                        "mx.example           bare:pw3\n"
                                        "192.0.2.9            ip:pw4\n");
    cr_assert_eq(route_credentials_count(t), 4);
    const char *pass = NULL;
    cr_assert_str_eq(creds_user(t, "[relay.example]:587", &pass), "relay");
    cr_assert_str_eq(pass, "pa:ss:word");   /* the password keeps its colons */
    cr_assert_null(creds_user(t, "[relay.example]:2525", &pass));
    cr_assert_null(creds_user(t, "[relay.example]", &pass));
    /* "[192.0.2.1]" is port 25: the default fills it on both sides. */
    cr_assert_str_eq(creds_user(t, "[192.0.2.1]:25", &pass), "other");
    cr_assert_str_eq(creds_user(t, "[192.0.2.1]", &pass), "other");
    /* A bare host serves it on any port, with or without brackets. */
    cr_assert_str_eq(creds_user(t, "[mx.example]:2525", &pass), "bare");
    cr_assert_str_eq(creds_user(t, "mx.example", &pass), "bare");
    cr_assert_str_eq(pass, "pw3");
    cr_assert_null(creds_user(t, "other.example", &pass));
    cr_assert_str_eq(creds_user(t, "[192.0.2.9]:2525", &pass), "ip");
    route_credentials_free(t);
    cr_assert_not(route_credentials_lookup(NULL, &(struct route_hop){ .host = "x" }, 25,
                                           &pass, &pass));
}

Test(route, credentials_errors_name_the_line_but_never_the_password)
{
    static const char *const bad[] = {
        "[relay.example]:587 nocolonsecret\n",
        "[relay.example]:587 :secret\n",
        "[relay.example]:587\n",
        "[relay.example]:587 a:secret extra\n",
        "[relay.example]:99999 a:secret\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct route_credentials *t = NULL;
        char err[256] = "";
        cr_assert_eq(route_credentials_parse(&t, bad[i], strlen(bad[i]), 25, "sasl_passwd", err,
                                             sizeof err),
                     -1, "accepted: %s", bad[i]);
        cr_assert_null(t);
        cr_assert_not_null(strstr(err, "sasl_passwd:1"), "%s", err);
        cr_assert_null(strstr(err, "secret"), "password leaked: %s", err);
    }
    struct route_credentials *t = NULL;
    char err[256];
    const char dup[] = "[r.example]:25 a:b\n[r.example] c:d\n";
    cr_assert_eq(route_credentials_parse(&t, dup, strlen(dup), 25, "sp", err, sizeof err), -1);
    cr_assert_not_null(strstr(err, "duplicate"), "%s", err);
}
