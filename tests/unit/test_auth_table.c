/*
 * Tests for io/auth_table: the password file (comments, blank lines, CRLF,
 * every rejected line with its "file:LINE: why"), files from disk, many
 * users, and verification with yescrypt and SHA-512 hashes made in the test
 * (auth_fixture.h), including unknown users, which must cost a hash too.
 * Temp files live in a directory made in .init.
 */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth_fixture.h"
#include "auth_table.h"

/* A valid SHA-512 hash (of "pw") for lines whose hash only has to look right. */
#define H6 "$6$a5I1uOT1etUtOt5V$6cjpV3ms9Csiva4uhRgqN6xybQDT.0dmZIJRjmaYKI4guj/" \
           "bpAGaeyKxmyHW6y88tZ56GKBAGrVgEnfX/BkaM/"

static char dir[64];
static struct crypt_data *cd;
static char err[512];

static void
table_setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/ringmta-auth-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    cd = calloc(1, sizeof *cd);
    err[0] = '\0';
}

static void
table_teardown(void)
{
    char cmd[128];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
    free(cd);
}

TestSuite(auth_table, .init = table_setup, .fini = table_teardown);

static bool
verify(const struct auth_table *t, const char *user, const char *pass)
{
    return auth_table_verify(t, user, pass, cd);
}

/* Writes text to dir/name; returns the path (static). */
static const char *
write_file(const char *name, const char *text, size_t len)
{
    static char path[128];

    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(text, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
    return path;
}

static double
seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- parsing and verification ---- */

Test(auth_table, verifies_yescrypt_and_sha512_hashes)
{
    char text[1024];

    snprintf(text, sizeof text, "alice:%s\nbob:%s\n", test_hash("$y$", 0, "wonder land"),
             test_hash("$6$", 0, "builder"));
    struct auth_table *t = test_table(text);
    cr_assert_eq(auth_table_count(t), 2);
    cr_assert(verify(t, "alice", "wonder land"));
    cr_assert(verify(t, "bob", "builder"));
    cr_assert_not(verify(t, "alice", "builder"));
    cr_assert_not(verify(t, "bob", "wonder land"));
    cr_assert_not(verify(t, "alice", "wonder lan"));
    cr_assert_not(verify(t, "alice", ""));
    cr_assert_not(verify(t, "Alice", "wonder land"), "user names are exact");
    cr_assert_not(verify(t, "alice ", "wonder land"));
    auth_table_free(t);
}

Test(auth_table, unknown_user_fails_even_with_a_users_password)
{
    char text[512];

    snprintf(text, sizeof text, "alice:%s\n", test_hash("$6$", 1000, "secret"));
    struct auth_table *t = test_table(text);
    cr_assert_not(verify(t, "mallory", "secret"));
    cr_assert_not(verify(t, "", "secret"));
    cr_assert(verify(t, "alice", "secret"));
    auth_table_free(t);
}

Test(auth_table, skips_comments_blank_lines_and_crlf)
{
    char text[1024];
    char *h = test_hash("$6$", 1000, "pw");

    snprintf(text, sizeof text,
             "# users of example.org\r\n\r\n   \n\t# indented comment\n"
             "  alice:%s  \r\n#bob:%s\ncarol:%s", h, h, h);
    struct auth_table *t = test_table(text);
    cr_assert_eq(auth_table_count(t), 2);
    cr_assert(verify(t, "alice", "pw"));
    cr_assert(verify(t, "carol", "pw"), "last line without LF");
    cr_assert_not(verify(t, "bob", "pw"), "commented out");
    cr_assert_not(verify(t, "#bob", "pw"));
    auth_table_free(t);
}

Test(auth_table, accepts_utf8_user_names_and_other_modern_methods)
{
    char text[1024];

    snprintf(text, sizeof text, "j\xc3\xbcrgen@example.org:%s\nsam:%s\n",
             test_hash("$6$", 1000, "pw"), test_hash("$2b$", 4, "pw"));
    struct auth_table *t = test_table(text);
    cr_assert(verify(t, "j\xc3\xbcrgen@example.org", "pw"));
    cr_assert(verify(t, "sam", "pw"), "bcrypt");
    auth_table_free(t);
}

Test(auth_table, empty_file_has_no_users)
{
    struct auth_table *t = test_table("# nobody yet\n");

    cr_assert_eq(auth_table_count(t), 0);
    cr_assert_not(verify(t, "alice", "pw"));
    auth_table_free(t);
    t = test_table("");
    cr_assert_eq(auth_table_count(t), 0);
    auth_table_free(t);
}

/* An unknown user must not answer faster than a known one with a wrong
 * password: both run one hash of the same cost. Generous bounds, as the
 * machine is shared. */
Test(auth_table, unknown_user_costs_a_hash_like_a_known_one)
{
    char text[512];
    double known = 1e9, unknown = 1e9;

    snprintf(text, sizeof text, "alice:%s\n", test_hash("$y$", 3, "secret"));
    struct auth_table *t = test_table(text);
    for (int i = 0; i < 3; i++) {
        double t0 = seconds();
        cr_assert_not(verify(t, "alice", "guess"));
        double t1 = seconds();
        cr_assert_not(verify(t, "nobody", "guess"));
        double t2 = seconds();
        known = t1 - t0 < known ? t1 - t0 : known;
        unknown = t2 - t1 < unknown ? t2 - t1 : unknown;
    }
    cr_assert_gt(known, 0.001, "a yescrypt hash takes milliseconds");
    cr_assert_gt(unknown, known / 3, "unknown %.4f s vs known %.4f s", unknown, known);
    auth_table_free(t);

    /* With no users at all, a built-in dummy setting still costs a hash. */
    t = test_table("");
    double t0 = seconds();
    cr_assert_not(verify(t, "nobody", "guess"));
    cr_assert_gt(seconds() - t0, 0.001);
    auth_table_free(t);
}

Test(auth_table, many_users)
{
    enum { N = 50000 };
    size_t cap = (size_t)N * (sizeof H6 + 16), n = 0;
    char *text = malloc(cap), *h = test_hash("$6$", 1000, "pw");

    for (int i = 0; i < N; i++)
        n += (size_t)snprintf(text + n, cap - n, "user%05d:%s\n", i, i == N - 1 ? h : H6);
    struct auth_table *t = auth_table_parse(text, n, "pw", err, sizeof err);
    cr_assert_not_null(t, "%s", err);
    cr_assert_eq(auth_table_count(t), N);
    cr_assert(verify(t, "user00000", "pw"), "H6 is a hash of \"pw\"");
    cr_assert(verify(t, "user49999", "pw"));
    cr_assert_not(verify(t, "user50000", "pw"));
    auth_table_free(t);
    free(text);
}

/* ---- rejected lines ---- */

struct bad_case {
    char text[400];
    size_t len;              /* 0: strlen(text) */
    char err[160];
};

ParameterizedTestParameters(auth_table, rejects_bad_lines_with_file_and_line)
{
    static struct bad_case cases[] = {
        { "alice\n", 0, "pw:1: expected 'user:hash'" },
        { "# ok\n\nalice " H6 "\n", 0, "pw:3: expected 'user:hash'" },
        { "alice:\n", 0, "pw:1: user 'alice': empty hash" },
        { ":" H6 "\n", 0, "pw:1: bad user name '' (1 to 255 octets of UTF-8, no control "
                          "characters)" },
        { "al\x01ice:" H6, 0, "pw:1: bad user name 'al\\x01ice' (1 to 255 octets of UTF-8, "
                              "no control characters)" },
        { "al\xc3ice:" H6, 0, "pw:1: bad user name 'al\\xc3ice' (1 to 255 octets of UTF-8, "
                              "no control characters)" },
        { "alice :" H6, 0, "pw:1: white space around ':'" },
        { "alice: " H6, 0, "pw:1: white space around ':'" },
        { "alice:" H6 ":19000:0:99999:7:::", 0,
          "pw:1: user 'alice': more than one ':' (expected 'user:hash')" },
        { "alice:$1$tzzKDnmO$iZMB8lqIIUlpndtI.g33k.", 0,
          "pw:1: user 'alice': legacy hash method; use yescrypt ($y$) or SHA-512 ($6$)" },
        { "alice:$5$73521qG9EifRB3Cg$rW8G.7tIPvn/Kr5waoFzl47OwwXVNzqy4OTmi5ZH4p7", 0,
          "pw:1: user 'alice': legacy hash method; use yescrypt ($y$) or SHA-512 ($6$)" },
        { "alice:abzlUXK5ed5rs", 0, "pw:1: user 'alice': not a crypt(3) password hash" },
        { "alice:plaintext", 0, "pw:1: user 'alice': not a crypt(3) password hash" },
        { "alice:!", 0, "pw:1: user 'alice': not a crypt(3) password hash" },
        { "alice:*", 0, "pw:1: user 'alice': not a crypt(3) password hash" },
        { "alice:!" H6, 0, "pw:1: user 'alice': not a crypt(3) password hash" },
        { "alice:$6$abc$", 0, "pw:1: user 'alice': not a crypt(3) password hash" },
        { "alice:$y$", 0, "pw:1: user 'alice': not a crypt(3) password hash" },
        { "alice:$6$abc$x y", 0, "pw:1: user 'alice': not a crypt(3) password hash" },
        { "alice:$z$abc$def", 0, "pw:1: user 'alice': not a crypt(3) password hash" },
        { "alice:" H6 "\nbob:" H6 "\nalice:" H6 "\n", 0,
          "pw:3: duplicate user 'alice' (first on line 1)" },
        { "alice:" H6 "\n\0bob:" H6 "\n", 12 + sizeof H6, "pw:2: NUL byte in the line" },
        { "al\0ice:" H6 "\n", 7 + sizeof H6, "pw:1: NUL byte in the line" },
    };
    return cr_make_param_array(struct bad_case, cases, sizeof cases / sizeof cases[0]);
}

ParameterizedTest(struct bad_case *c, auth_table, rejects_bad_lines_with_file_and_line)
{
    size_t len = c->len ? c->len : strlen(c->text);

    cr_assert_null(auth_table_parse(c->text, len, "pw", err, sizeof err), "accepted %s",
                   c->err);
    cr_assert_str_eq(err, c->err);
}

Test(auth_table, rejects_overlong_user_names_and_hashes)
{
    char text[1024];

    memset(text, 'u', 256);
    snprintf(text + 256, sizeof text - 256, ":%s\n", H6);
    cr_assert_null(auth_table_parse(text, strlen(text), "pw", err, sizeof err));
    cr_assert_not_null(strstr(err, "pw:1: bad user name 'uuu"), "%s", err);
    memmove(text + 255, text + 256, strlen(text + 256) + 1);
    struct auth_table *t = test_table(text);
    cr_assert_eq(auth_table_count(t), 1, "255 octets are fine");
    auth_table_free(t);

    int n = snprintf(text, sizeof text, "alice:%s", H6);
    memset(text + n, 'x', 400);
    text[n + 400] = '\0';
    cr_assert_null(auth_table_parse(text, strlen(text), "pw", err, sizeof err));
    cr_assert_str_eq(err, "pw:1: user 'alice': too long hash");
}

/* ---- files ---- */

Test(auth_table, loads_a_file_and_names_it_in_errors)
{
    char text[512], want[256];
    int n = snprintf(text, sizeof text, "# users\nalice:%s\n", test_hash("$y$", 1, "pw"));
    const char *path = write_file("passwd", text, (size_t)n);

    struct auth_table *t = auth_table_load(path, err, sizeof err);
    cr_assert_not_null(t, "%s", err);
    cr_assert(verify(t, "alice", "pw"));
    auth_table_free(t);

    path = write_file("broken", "alice:" H6 "\nbob\n", sizeof H6 + 10);
    cr_assert_null(auth_table_load(path, err, sizeof err));
    snprintf(want, sizeof want, "%s:2: expected 'user:hash'", path);
    cr_assert_str_eq(err, want);
}

Test(auth_table, missing_file_is_an_error)
{
    char path[128], want[256];

    snprintf(path, sizeof path, "%s/none", dir);
    cr_assert_null(auth_table_load(path, err, sizeof err));
    snprintf(want, sizeof want, "cannot read %s: No such file or directory", path);
    cr_assert_str_eq(err, want);
}

Test(auth_table, free_of_null_is_harmless)
{
    cr_assert_null(auth_table_free(NULL));
}
