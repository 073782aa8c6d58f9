/*
 * auth_fixture - password hashes and tables for the io/auth_table and
 * io/authpool tests. Header-only; hashes are made in the test process with
 * crypt_gensalt_rn and crypt_rn, as the brief for the password file says.
 */
#ifndef RINGMTA_TESTS_AUTH_FIXTURE_H
#define RINGMTA_TESTS_AUTH_FIXTURE_H

#include <criterion/criterion.h>
#include <crypt.h>
#include <stdlib.h>
#include <string.h>

#include "auth_table.h"

/* crypt(3) hash of pass with a fresh salt: method prefix ("$y$", "$6$"),
 * cost count (0: libcrypt's default). Heap string, never freed by tests. */
static inline char *
test_hash(const char *prefix, unsigned long count, const char *pass)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data *cd = calloc(1, sizeof *cd);

    cr_assert_not_null(crypt_gensalt_rn(prefix, count, NULL, 0, setting, sizeof setting));
    const char *h = crypt_rn(pass, setting, cd, sizeof *cd);
    cr_assert_not_null(h, "crypt_rn(%s)", setting);
    char *r = strdup(h);
    free(cd);
    return r;
}

/* A table from text that must parse. */
static inline struct auth_table *
test_table(const char *text)
{
    char err[512] = "";
    struct auth_table *t = auth_table_parse(text, strlen(text), "pw", err, sizeof err);

    cr_assert_not_null(t, "%s", err);
    return t;
}

#endif
