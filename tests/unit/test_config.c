/*
 * test_config - defaults, value parsers, main.cf parsing, -o assignments,
 * error texts, cross checks and the config_format round trip.
 * Parameter structs hold text inline: Criterion copies them into each test's
 * process, where pointers into the binary may not be valid.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static struct config cfg;
static char err[512];

static void
config_setup(void)
{
    config_init(&cfg);
    err[0] = '\0';
}

static void
config_teardown(void)
{
    config_free(&cfg);
}

TestSuite(config, .init = config_setup, .fini = config_teardown);

static int
parse(const char *text)
{
    return config_parse_text(&cfg, text, strlen(text), "main.cf", err, sizeof err);
}

/* ---------------------------------------------------------------- defaults */

Test(config, defaults_match_the_documentation)
{
    cr_assert_str_eq(cfg.hostname, "");
    cr_assert_str_eq(cfg.smtpd_banner, "ESMTP ringmta");
    cr_assert_eq(cfg.nlisten, 1);
    cr_assert_str_eq(cfg.listen[0].host, "127.0.0.1");
    cr_assert_eq(cfg.listen[0].port, 2525);
    cr_assert_eq(cfg.listen[0].kind, LISTENER_SMTP);
    cr_assert_eq(cfg.workers, 0);
    cr_assert_str_eq(cfg.log_level, "info");
    cr_assert_str_eq(cfg.spool_dir, "./var/spool");
    cr_assert_eq(cfg.spool_segment_size, 64ull << 20);
    cr_assert_eq(cfg.durability, DURABILITY_FSYNC);
    cr_assert_eq(cfg.spool_receive, SPOOL_RECEIVE_MAPPED);
    cr_assert_str_eq(cfg.relay_domains, "");
    cr_assert_str_eq(cfg.relay_networks, "127.0.0.0/8, ::1");
    cr_assert_eq(cfg.message_size_limit, 10240000);
    cr_assert_eq(cfg.max_hops, 100);
    cr_assert_eq(cfg.body_line_limit, 998);
    cr_assert_eq(cfg.header_size_limit, 102400);
    cr_assert_eq(cfg.smtpd_recipient_limit, 1000);
    cr_assert_eq(cfg.smtpd_command_line_limit, 512);
    cr_assert_eq(cfg.smtpd_timeout_ms, 300000);
    cr_assert_eq(cfg.smtpd_min_data_rate, 500);
    cr_assert_eq(cfg.smtpd_greet_pause_ms, 0);
    cr_assert_eq(cfg.smtpd_soft_error_limit, 10);
    cr_assert_eq(cfg.smtpd_hard_error_limit, 20);
    cr_assert_eq(cfg.smtpd_error_sleep_time_ms, 1000);
    cr_assert_eq(cfg.smtpd_junk_command_limit, 100);
    cr_assert_eq(cfg.smtpd_client_connection_count_limit, 50);
    cr_assert_eq(cfg.smtpd_client_connection_rate_limit, 0);
    cr_assert_eq(cfg.smtpd_connection_limit, 10000);
}

Test(config, auth_defaults_offer_no_auth_and_require_tls)
{
    cr_assert_str_eq(cfg.smtpd_auth_password_file, "");
    cr_assert(cfg.smtpd_tls_auth_only);
    cr_assert_eq(cfg.smtpd_client_auth_failure_limit, 10);
    cr_assert_eq(cfg.smtpd_auth_threads, 2);
}

Test(config, auth_settings_from_a_file)
{
    cr_assert_eq(parse("smtpd_auth_password_file = /etc/ringmta/passwd\n"
                       "smtpd_tls_auth_only = no\n"
                       "smtpd_client_auth_failure_limit = 3\n"
                       "smtpd_auth_threads = 4\n"), 0, "%s", err);
    cr_assert_str_eq(cfg.smtpd_auth_password_file, "/etc/ringmta/passwd");
    cr_assert_not(cfg.smtpd_tls_auth_only);
    cr_assert_eq(cfg.smtpd_client_auth_failure_limit, 3);
    cr_assert_eq(cfg.smtpd_auth_threads, 4);
    cr_assert_neq(parse("smtpd_auth_threads = 0\n"), 0);
    cr_assert_str_eq(err, "main.cf:1: bad value for smtpd_auth_threads: '0' "
                          "(must be between 1 and 64)");
}

Test(config, defaults_pass_the_cross_checks)
{
    cr_assert_eq(config_check(&cfg, err, sizeof err), 0, "%s", err);
}

Test(config, docs_list_every_setting_once_with_a_description)
{
    size_t n;
    const struct config_doc *docs = config_docs(&n);

    cr_assert_geq(n, 26);
    for (size_t i = 0; i < n; i++) {
        cr_assert_not_null(docs[i].default_text);
        cr_assert_gt(strlen(docs[i].description), 10, "%s", docs[i].key);
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(docs[i].key, docs[j].key);
    }
}

Test(config, formatted_defaults_read_as_the_documented_default_text)
{
    size_t n;
    const struct config_doc *docs = config_docs(&n);
    char *formatted = config_format(&cfg);
    char *text = malloc(strlen(formatted) + 2);
    char line[256];

    /* A leading newline lets every line be found as "\nkey = value\n". */
    sprintf(text, "\n%s", formatted);
    for (size_t i = 0; i < n; i++) {
        if (docs[i].default_text[0] == '\0')
            snprintf(line, sizeof line, "\n%s =\n", docs[i].key);
        else
            snprintf(line, sizeof line, "\n%s = %s\n", docs[i].key, docs[i].default_text);
        cr_assert_not_null(strstr(text, line), "missing %s in\n%s", line + 1, text);
    }
    free(text);
    free(formatted);
}

/* ------------------------------------------------------------ value parsers */

struct number_case {
    char text[32];
    int rc;
    uint64_t value;
};

ParameterizedTestParameters(config, parses_sizes_in_powers_of_1024)
{
    static struct number_case cases[] = {
        {"0", 0, 0},
        {"1", 0, 1},
        {"10240000", 0, 10240000},
        {"10K", 0, 10240},
        {"10k", 0, 10240},
        {"64M", 0, 64ull << 20},
        {"2G", 0, 2ull << 30},
        {"18446744073709551615", 0, UINT64_MAX},
        {"17179869183G", 0, 17179869183ull << 30},
        /* overflow */
        {"17179869184G", -1, 0},
        {"99999999999G", -1, 0},
        {"18446744073709551616", -1, 0},
        {"99999999999999999999999", -1, 0},
        /* not a size */
        {"", -1, 0},
        {"10Q", -1, 0},
        {"-1", -1, 0},
        {"+1", -1, 0},
        {" 1", -1, 0},
        {"1 ", -1, 0},
        {"1KB", -1, 0},
        {"1.5M", -1, 0},
        {"M", -1, 0},
        {"1T", -1, 0},
    };
    return cr_make_param_array(struct number_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct number_case *c, config, parses_sizes_in_powers_of_1024)
{
    uint64_t v = 12345;

    cr_assert_eq(config_parse_size(c->text, &v), c->rc, "'%s'", c->text);
    cr_assert_eq(v, c->rc == 0 ? c->value : 12345, "'%s'", c->text);
}

ParameterizedTestParameters(config, parses_times_into_milliseconds)
{
    static struct number_case cases[] = {
        {"0", 0, 0},
        {"30", 0, 30000},
        {"30s", 0, 30000},
        {"500ms", 0, 500},
        {"0ms", 0, 0},
        {"5m", 0, 300000},
        {"2h", 0, 7200000},
        {"1d", 0, 86400000},
        {"213503982334d", 0, 213503982334ull * 86400000},
        /* overflow */
        {"213503982335d", -1, 0},
        {"18446744073709552s", -1, 0},
        {"99999999999999999999ms", -1, 0},
        /* not a time */
        {"-1s", -1, 0},
        {"5x", -1, 0},
        {"", -1, 0},
        {"s", -1, 0},
        {"5 s", -1, 0},
        {"5S", -1, 0},
        {"5sec", -1, 0},
        {"1.5s", -1, 0},
        {"5mss", -1, 0},
    };
    return cr_make_param_array(struct number_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct number_case *c, config, parses_times_into_milliseconds)
{
    uint64_t v = 12345;

    cr_assert_eq(config_parse_time_ms(c->text, &v), c->rc, "'%s'", c->text);
    cr_assert_eq(v, c->rc == 0 ? c->value : 12345, "'%s'", c->text);
}

ParameterizedTestParameters(config, parses_booleans)
{
    static struct number_case cases[] = {
        {"yes", 0, 1},  {"no", 0, 0},    {"true", 0, 1}, {"false", 0, 0},
        {"1", 0, 1},    {"0", 0, 0},     {"YES", 0, 1},  {"False", 0, 0},
        {"", -1, 0},    {"2", -1, 0},    {"on", -1, 0},  {"yes ", -1, 0},
        {"y", -1, 0},   {"nope", -1, 0},
    };
    return cr_make_param_array(struct number_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct number_case *c, config, parses_booleans)
{
    bool v = false;

    cr_assert_eq(config_parse_bool(c->text, &v), c->rc, "'%s'", c->text);
    if (c->rc == 0)
        cr_assert_eq(v, c->value == 1, "'%s'", c->text);
}

/* ------------------------------------------------------ config_set per type */

struct set_case {
    char key[40];
    char value[40];
    char error[128]; /* "" = accepted */
};

ParameterizedTestParameters(config, set_accepts_good_values_and_explains_bad_ones)
{
    static struct set_case cases[] = {
        {"message_size_limit", "20M", ""},
        {"message_size_limit", "  20M  ", ""},
        {"message_size_limit", "10Q",
         "bad value for message_size_limit: '10Q' (expected a size like 10M)"},
        {"message_size_limit", "99999999999G",
         "bad value for message_size_limit: '99999999999G' (expected a size like 10M)"},
        {"spool_segment_size", "1M", ""},
        {"spool_segment_size", "2G", ""},
        {"spool_segment_size", "512K",
         "bad value for spool_segment_size: '512K' (must be between 1M and 2G)"},
        {"spool_segment_size", "3G",
         "bad value for spool_segment_size: '3G' (must be between 1M and 2G)"},
        {"smtpd_timeout", "5m", ""},
        {"smtpd_timeout", "-1s",
         "bad value for smtpd_timeout: '-1s' (expected a time like 30s, 5m or 500ms)"},
        {"smtpd_timeout", "5x",
         "bad value for smtpd_timeout: '5x' (expected a time like 30s, 5m or 500ms)"},
        {"smtpd_timeout", "0", "bad value for smtpd_timeout: '0' (must be at least 1ms)"},
        {"workers", "8", ""},
        {"workers", "-1", "bad value for workers: '-1' (expected a whole number)"},
        {"workers", "2000", "bad value for workers: '2000' (must be at most 1024)"},
        {"smtpd_recipient_limit", "4294967295", ""},
        {"smtpd_recipient_limit", "4294967296",
         "bad value for smtpd_recipient_limit: '4294967296' "
         "(must be at most 4294967295)"},
        {"smtpd_recipient_limit", "99999999999999999999999",
         "bad value for smtpd_recipient_limit: '99999999999999999999999' "
         "(must be at most 4294967295)"},
        {"smtpd_command_line_limit", "511",
         "bad value for smtpd_command_line_limit: '511' (must be at least 512)"},
        {"durability", "none", ""},
        {"durability", "sometimes",
         "bad value for durability: 'sometimes' (expected fsync or none)"},
        {"spool_receive", "buffered", ""},
        {"spool_receive", "copied",
         "bad value for spool_receive: 'copied' (expected mapped or buffered)"},
        {"log_level", "debug", ""},
        {"log_level", "verbose",
         "bad value for log_level: 'verbose' (expected error, warn, info or debug)"},
        {"smtpd_banner", "ESMTP ready", ""},
        {"smtpd_banner", "two\rlines",
         "bad value for smtpd_banner: 'two\\x0dlines' (control characters are not "
         "allowed)"},
        {"hostname", "", ""},
        {"relay_networks", "10.0.0.0/8, [2001:db8::]/32 192.0.2.1", ""},
        {"relay_networks", "", ""},
        {"listen", "[::1]:25", ""},
        {"listen", "127.0.0.1:0",
         "bad value for listen: '127.0.0.1:0' "
         "(the port must be a number from 1 to 65535)"},
        {"smtpd_auth_password_file", "/etc/ringmta/passwd", ""},
        {"smtpd_auth_password_file", "pass\nwd",
         "bad value for smtpd_auth_password_file: 'pass\\x0awd' (control characters are "
         "not allowed)"},
        {"smtpd_tls_auth_only", "no", ""},
        {"smtpd_tls_auth_only", "maybe",
         "bad value for smtpd_tls_auth_only: 'maybe' (expected yes or no)"},
        {"smtpd_client_auth_failure_limit", "0", ""},
        {"smtpd_client_auth_failure_limit", "-1",
         "bad value for smtpd_client_auth_failure_limit: '-1' (expected a whole number)"},
        {"smtpd_auth_threads", "64", ""},
        {"smtpd_auth_threads", "0",
         "bad value for smtpd_auth_threads: '0' (must be between 1 and 64)"},
        {"smtpd_auth_threads", "65",
         "bad value for smtpd_auth_threads: '65' (must be between 1 and 64)"},
        {"no_such_setting", "1", "unknown setting 'no_such_setting'"},
        {"Message_Size_Limit", "1", "unknown setting 'Message_Size_Limit'"},
    };
    return cr_make_param_array(struct set_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct set_case *c, config,
                  set_accepts_good_values_and_explains_bad_ones)
{
    int rc = config_set(&cfg, c->key, c->value, err, sizeof err);

    if (c->error[0] == '\0') {
        cr_assert_eq(rc, 0, "%s = '%s': %s", c->key, c->value, err);
    } else {
        cr_assert_eq(rc, -1, "%s = '%s' accepted", c->key, c->value);
        cr_assert_str_eq(err, c->error);
    }
}

Test(config, set_stores_parsed_values)
{
    cr_assert_eq(config_set(&cfg, "message_size_limit", "20M", err, sizeof err), 0);
    cr_assert_eq(cfg.message_size_limit, 20ull << 20);
    cr_assert_eq(config_set(&cfg, "smtpd_greet_pause", "1500ms", err, sizeof err), 0);
    cr_assert_eq(cfg.smtpd_greet_pause_ms, 1500);
    cr_assert_eq(config_set(&cfg, "durability", "NONE", err, sizeof err), 0);
    cr_assert_eq(cfg.durability, DURABILITY_NONE);
    cr_assert_eq(config_set(&cfg, "log_level", "Debug", err, sizeof err), 0);
    cr_assert_str_eq(cfg.log_level, "debug", "enum words are stored canonical");
    cr_assert_eq(config_set(&cfg, "smtpd_banner", "  hello  world ", err, sizeof err), 0);
    cr_assert_str_eq(cfg.smtpd_banner, "hello  world");
}

Test(config, failed_set_keeps_the_previous_value)
{
    config_set(&cfg, "message_size_limit", "1M", err, sizeof err);
    cr_assert_eq(config_set(&cfg, "message_size_limit", "lots", err, sizeof err), -1);
    cr_assert_eq(cfg.message_size_limit, 1 << 20);
    cr_assert_eq(config_set(&cfg, "listen", "127.0.0.1:25, bogus", err, sizeof err), -1);
    cr_assert_eq(cfg.nlisten, 1);
    cr_assert_eq(cfg.listen[0].port, 2525);
    cr_assert_eq(config_set(&cfg, "log_level", "loud", err, sizeof err), -1);
    cr_assert_str_eq(cfg.log_level, "info");
}

Test(config, relay_networks_must_be_a_cidr_list)
{
    const char *prefix = "bad value for relay_networks: '10.0.0.0/8, 10.0.0.0/33' (";

    cr_assert_eq(config_set(&cfg, "relay_networks", "10.0.0.0/8, 10.0.0.0/33", err,
                            sizeof err),
                 -1);
    cr_assert_eq(strncmp(err, prefix, strlen(prefix)), 0, "%s", err);
    cr_assert_str_eq(cfg.relay_networks, "127.0.0.0/8, ::1");
}

Test(config, unknown_key_with_control_characters_is_escaped_in_the_error)
{
    cr_assert_eq(config_set(&cfg, "bad\nkey", "1", err, sizeof err), -1);
    cr_assert_str_eq(err, "unknown setting 'bad\\x0akey'");
}

/* ------------------------------------------------------------------ listen */

struct listen_case {
    char text[64];
    int rc;
    size_t count;
    char host[48]; /* of the last endpoint */
    uint16_t port;
    enum listener_kind kind;
};

ParameterizedTestParameters(config, parses_listen_lists)
{
    static struct listen_case cases[] = {
        {"127.0.0.1:25", 0, 1, "127.0.0.1", 25, LISTENER_SMTP},
        {"0.0.0.0:587/submission", 0, 1, "0.0.0.0", 587, LISTENER_SUBMISSION},
        {"0.0.0.0:465/submissions", 0, 1, "0.0.0.0", 465, LISTENER_SUBMISSIONS},
        {"127.0.0.1:25/smtp", 0, 1, "127.0.0.1", 25, LISTENER_SMTP},
        {"[::1]:2525", 0, 1, "::1", 2525, LISTENER_SMTP},
        {"[2001:db8::1]:65535/submission", 0, 1, "2001:db8::1", 65535,
         LISTENER_SUBMISSION},
        {"127.0.0.1:2525, [::1]:2525/submission", 0, 2, "::1", 2525, LISTENER_SUBMISSION},
        {"127.0.0.1:1 127.0.0.1:2,127.0.0.1:3", 0, 3, "127.0.0.1", 3, LISTENER_SMTP},
        {" ,127.0.0.1:25,, ", 0, 1, "127.0.0.1", 25, LISTENER_SMTP},
        {"", 0, 0, "", 0, LISTENER_SMTP},
        /* bad ports */
        {"127.0.0.1:0", -1, 0, "", 0, 0},
        {"127.0.0.1:65536", -1, 0, "", 0, 0},
        {"127.0.0.1:99999999999999999999999", -1, 0, "", 0, 0},
        {"127.0.0.1:", -1, 0, "", 0, 0},
        {"127.0.0.1:-1", -1, 0, "", 0, 0},
        {"127.0.0.1:25x", -1, 0, "", 0, 0},
        {"[::1]:0", -1, 0, "", 0, 0},
        /* bad addresses and shapes */
        {"127.0.0.1", -1, 0, "", 0, 0},
        {"localhost:25", -1, 0, "", 0, 0},
        {"127.0.0.256:25", -1, 0, "", 0, 0},
        {"::1:25", -1, 0, "", 0, 0},
        {"[::1]", -1, 0, "", 0, 0},
        {"[::1:25", -1, 0, "", 0, 0},
        {"[127.0.0.1]:25", -1, 0, "", 0, 0},
        {":25", -1, 0, "", 0, 0},
        /* bad kinds */
        {"127.0.0.1:25/lmtp", -1, 0, "", 0, 0},
        {"127.0.0.1:25/", -1, 0, "", 0, 0},
    };
    return cr_make_param_array(struct listen_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct listen_case *c, config, parses_listen_lists)
{
    int rc = config_set(&cfg, "listen", c->text, err, sizeof err);

    cr_assert_eq(rc, c->rc, "'%s': %s", c->text, err);
    if (rc != 0) {
        cr_assert_not_null(strstr(err, "bad value for listen: '"), "%s", err);
        return;
    }
    cr_assert_eq(cfg.nlisten, c->count, "'%s'", c->text);
    if (c->count == 0)
        return;
    cr_assert_str_eq(cfg.listen[c->count - 1].host, c->host);
    cr_assert_eq(cfg.listen[c->count - 1].port, c->port);
    cr_assert_eq(cfg.listen[c->count - 1].kind, c->kind);
}

Test(config, listen_errors_name_the_bad_endpoint_and_why)
{
    cr_assert_eq(config_set(&cfg, "listen", "127.0.0.1:25, ::1:25", err, sizeof err), -1);
    cr_assert_str_eq(err, "bad value for listen: '::1:25' (an IPv6 address needs "
                          "brackets, like [::1]:25)");
    config_set(&cfg, "listen", "127.0.0.1:25/lmtp", err, sizeof err);
    cr_assert_str_eq(err, "bad value for listen: '127.0.0.1:25/lmtp' (unknown kind "
                          "'/lmtp'; expected /smtp, /submission or /submissions)");
    config_set(&cfg, "listen", "mail.example:25", err, sizeof err);
    cr_assert_str_eq(err, "bad value for listen: 'mail.example:25' ('mail.example' is "
                          "not an IPv4 address)");
}

/* -------------------------------------------------------------- main.cf */

Test(config, file_with_comments_blank_lines_and_continuations)
{
    const char *text = "# ringmta main.cf\n"
                       "\n"
                       "message_size_limit = 20M\n"
                       "   # an indented comment\n"
                       "smtpd_banner = ESMTP\n"
                       "    relay ready\n"
                       "listen = 127.0.0.1:25,\n"
                       "\t[::1]:25/submission\n"
                       "\n"
                       "durability=none\n"
                       "  \n"
                       "smtpd_timeout = 1m";

    cr_assert_eq(parse(text), 0, "%s", err);
    cr_assert_eq(cfg.message_size_limit, 20ull << 20);
    cr_assert_str_eq(cfg.smtpd_banner, "ESMTP relay ready");
    cr_assert_eq(cfg.nlisten, 2);
    cr_assert_str_eq(cfg.listen[1].host, "::1");
    cr_assert_eq(cfg.listen[1].kind, LISTENER_SUBMISSION);
    cr_assert_eq(cfg.durability, DURABILITY_NONE);
    cr_assert_eq(cfg.smtpd_timeout_ms, 60000, "last line without a newline");
}

Test(config, file_continuation_survives_comment_lines_like_postfix)
{
    cr_assert_eq(parse("relay_domains = a.example,\n# b is gone\n  c.example\n"), 0, "%s",
                 err);
    cr_assert_str_eq(cfg.relay_domains, "a.example, c.example");
}

Test(config, file_with_crlf_line_endings)
{
    cr_assert_eq(parse("max_hops = 50\r\nsmtpd_banner = hi\r\n"), 0, "%s", err);
    cr_assert_eq(cfg.max_hops, 50);
    cr_assert_str_eq(cfg.smtpd_banner, "hi");
}

Test(config, file_setting_twice_keeps_the_last)
{
    cr_assert_eq(parse("max_hops = 10\nmax_hops = 30\n"), 0, "%s", err);
    cr_assert_eq(cfg.max_hops, 30);
}

Test(config, file_value_may_contain_hash_and_equals)
{
    cr_assert_eq(parse("smtpd_banner = ESMTP #1 a=b\n"), 0, "%s", err);
    cr_assert_str_eq(cfg.smtpd_banner, "ESMTP #1 a=b");
}

Test(config, empty_file_keeps_defaults)
{
    cr_assert_eq(parse(""), 0);
    cr_assert_eq(parse("\n\n# nothing\n"), 0);
    cr_assert_eq(cfg.max_hops, 100);
}

struct file_error_case {
    char text[96];
    char error[160];
};

ParameterizedTestParameters(config, file_errors_name_file_and_line)
{
    static struct file_error_case cases[] = {
        {"max_hops = 10\n\nfoo = 1\n", "main.cf:3: unknown setting 'foo'"},
        {"# c\nmessage_size_limit = 10Q\n",
         "main.cf:2: bad value for message_size_limit: '10Q' (expected a size like 10M)"},
        {"max_hops = 10\nsmtpd_timeout = 5\n  x\n",
         "main.cf:2: bad value for smtpd_timeout: '5 x' (expected a time like 30s, 5m or "
         "500ms)"},
        {"  max_hops = 10\n",
         "main.cf:1: line starts with white space but continues no setting"},
        {"max_hops 10\n", "main.cf:1: expected 'key = value', got 'max_hops 10'"},
        {"a\n= 10\n", "main.cf:1: expected 'key = value', got 'a'"},
        {"max_hops = 1\n= 10\n", "main.cf:2: expected 'key = value', got '= 10'"},
        {"max_hops = 1\nmax_hops = 0\n",
         "main.cf:2: bad value for max_hops: '0' (must be at least 1)"},
    };
    return cr_make_param_array(struct file_error_case, cases,
                               sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct file_error_case *c, config, file_errors_name_file_and_line)
{
    cr_assert_eq(parse(c->text), -1, "accepted: %s", c->text);
    cr_assert_str_eq(err, c->error);
}

Test(config, file_with_nul_byte_is_rejected)
{
    static const char text[] = "max_hops = 1\nmax_\0hops = 2\n";

    cr_assert_eq(config_parse_text(&cfg, text, sizeof text - 1, "x.cf", err, sizeof err),
                 -1);
    cr_assert_str_eq(err, "x.cf:2: NUL byte in the line");
}

Test(config, file_text_is_bounded_by_len_not_nul)
{
    const char *text = "max_hops = 7\nmax_hops = 8\n";

    cr_assert_eq(config_parse_text(&cfg, text, 13, "x.cf", err, sizeof err), 0);
    cr_assert_eq(cfg.max_hops, 7);
}

/* --------------------------------------------------------- -o assignments */

Test(config, assignment_sets_one_setting)
{
    cr_assert_eq(config_set_assignment(&cfg, "message_size_limit=20M", err, sizeof err),
                 0);
    cr_assert_eq(cfg.message_size_limit, 20ull << 20);
    cr_assert_eq(config_set_assignment(&cfg, " smtpd_banner = a = b ", err, sizeof err),
                 0);
    cr_assert_str_eq(cfg.smtpd_banner, "a = b");
    cr_assert_eq(config_set_assignment(&cfg, "hostname=", err, sizeof err), 0);
    cr_assert_str_eq(cfg.hostname, "");
}

Test(config, assignment_errors)
{
    cr_assert_eq(config_set_assignment(&cfg, "message_size_limit", err, sizeof err), -1);
    cr_assert_str_eq(err, "expected key=value, got 'message_size_limit'");
    cr_assert_eq(config_set_assignment(&cfg, "=5", err, sizeof err), -1);
    cr_assert_str_eq(err, "expected key=value, got '=5'");
    cr_assert_eq(config_set_assignment(&cfg, "nope=5", err, sizeof err), -1);
    cr_assert_str_eq(err, "unknown setting 'nope'");
    cr_assert_eq(config_set_assignment(&cfg, "max_hops=x", err, sizeof err), -1);
    cr_assert_str_eq(err, "bad value for max_hops: 'x' (expected a whole number)");
}

/* ---------------------------------------------------------- cross checks */

Test(config, check_rejects_soft_error_limit_above_hard)
{
    config_set(&cfg, "smtpd_soft_error_limit", "30", err, sizeof err);
    cr_assert_eq(config_check(&cfg, err, sizeof err), -1);
    cr_assert_str_eq(err, "smtpd_soft_error_limit (30) must not exceed "
                          "smtpd_hard_error_limit (20)");
    config_set(&cfg, "smtpd_hard_error_limit", "30", err, sizeof err);
    cr_assert_eq(config_check(&cfg, err, sizeof err), 0, "%s", err);
}

Test(config, check_requires_a_listen_endpoint)
{
    cr_assert_eq(config_set(&cfg, "listen", "", err, sizeof err), 0);
    cr_assert_eq(config_check(&cfg, err, sizeof err), -1);
    cr_assert_str_eq(err, "listen: no endpoint; set listen = ADDR:PORT");
}

Test(config, check_rejects_an_endpoint_listed_twice)
{
    config_set(&cfg, "listen", "[::1]:25, 127.0.0.1:25, [::1]:25/submission", err,
               sizeof err);
    cr_assert_eq(config_check(&cfg, err, sizeof err), -1);
    cr_assert_str_eq(err, "listen: ::1 port 25 is listed twice");
}

Test(config, check_requires_a_spool_dir)
{
    config_set(&cfg, "spool_dir", "", err, sizeof err);
    cr_assert_eq(config_check(&cfg, err, sizeof err), -1);
    cr_assert_str_eq(err, "spool_dir must not be empty");
}

/* ------------------------------------------------------------ round trip */

static void
assert_round_trip(void)
{
    struct config copy;
    char *first = config_format(&cfg), *second;

    config_init(&copy);
    cr_assert_eq(config_parse_text(&copy, first, strlen(first), "formatted", err,
                                   sizeof err),
                 0, "%s\n%s", err, first);
    second = config_format(&copy);
    cr_assert_str_eq(second, first);
    cr_assert_eq(copy.nlisten, cfg.nlisten);
    for (size_t i = 0; i < cfg.nlisten; i++) {
        cr_assert_str_eq(copy.listen[i].host, cfg.listen[i].host);
        cr_assert_eq(copy.listen[i].port, cfg.listen[i].port);
        cr_assert_eq(copy.listen[i].kind, cfg.listen[i].kind);
    }
    cr_assert_eq(copy.message_size_limit, cfg.message_size_limit);
    cr_assert_eq(copy.smtpd_timeout_ms, cfg.smtpd_timeout_ms);
    cr_assert_eq(copy.smtpd_greet_pause_ms, cfg.smtpd_greet_pause_ms);
    cr_assert_eq(copy.spool_segment_size, cfg.spool_segment_size);
    cr_assert_eq(copy.durability, cfg.durability);
    cr_assert_str_eq(copy.smtpd_banner, cfg.smtpd_banner);
    cr_assert_str_eq(copy.hostname, cfg.hostname);
    free(first);
    free(second);
    config_free(&copy);
}

Test(config, format_of_defaults_parses_back_to_the_same_config)
{
    assert_round_trip();
}

Test(config, format_of_changed_settings_parses_back_to_the_same_config)
{
    static const char *const changes[] = {
        "hostname = mx1.example.org",
        "smtpd_banner = ESMTP #hash = equals \\ backslash",
        "listen = 0.0.0.0:25 [2001:db8::25]:587/submission 127.0.0.1:465/submissions",
        "workers = 12",
        "log_level = debug",
        "spool_segment_size = 1537M",
        "durability = none",
        "relay_domains = example.org example.net",
        "message_size_limit = 12345",
        "header_size_limit = 3G",
        "smtpd_timeout = 1500ms",
        "smtpd_greet_pause = 2h",
        "smtpd_error_sleep_time = 0",
        "smtpd_min_data_rate = 1K",
        "smtpd_auth_password_file = /etc/ringmta/passwd",
        "smtpd_tls_auth_only = no",
        "smtpd_client_auth_failure_limit = 0",
        "smtpd_auth_threads = 8",
    };

    for (size_t i = 0; i < sizeof changes / sizeof changes[0]; i++)
        cr_assert_eq(config_set_assignment(&cfg, changes[i], err, sizeof err), 0,
                     "%s: %s", changes[i], err);
    assert_round_trip();
}

Test(config, format_writes_one_key_value_line_per_setting)
{
    size_t n, lines = 0;
    char *text;

    config_docs(&n);
    config_set(&cfg, "listen", "127.0.0.1:25, [::1]:587/submission", err, sizeof err);
    config_set(&cfg, "smtpd_timeout", "90s", err, sizeof err);
    text = config_format(&cfg);
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    cr_assert_eq(lines, n);
    cr_assert_not_null(strstr(text, "\nlisten = 127.0.0.1:25, [::1]:587/submission\n"));
    cr_assert_not_null(strstr(text, "\nsmtpd_timeout = 90s\n"));
    cr_assert_not_null(strstr(text, "\nspool_segment_size = 64M\n"));
    cr_assert_eq(strncmp(text, "hostname =\n", 11), 0, "empty value: no trailing blank");
    free(text);
}

Test(config, free_twice_is_harmless)
{
    config_free(&cfg);
    config_free(&cfg);
    cr_assert_null(cfg.smtpd_banner);
    cr_assert_null(cfg.listen);
}
