/*
 * auth_table - the SMTP AUTH password file (smtpd_auth_password_file) and
 * password verification with libcrypt.
 *
 * A table is immutable once built: any number of threads may verify against
 * it at once, each with its own struct crypt_data. Building one (parse, load)
 * is single-threaded and blocking: at start-up or on reload, never on a
 * worker loop. Verifying is slow on purpose (yescrypt: tens of ms): io/
 * does it on an authpool thread, never on a worker's ring loop.
 *
 * The file: one "user:hash" per line; blank lines and lines whose first
 * non-blank character is '#' are ignored; white space around a line and a CR
 * before the LF are ignored. user is what SASL delivers (sasl_user_valid);
 * hash is a crypt(3) string of a method libcrypt supports and does not call
 * legacy: yescrypt "$y$", gost-yescrypt "$gy$", scrypt "$7$", bcrypt "$2b$",
 * SHA-512 "$6$"; legacy ones (MD5 "$1$", SHA-256 "$5$"...) are refused, and
 * so are DES crypt and passwords in clear, which are not "$" strings. A user
 * listed twice is an error. Errors read "origin:LINE: why".
 *
 * Verification: an unknown user costs one crypt() too, with the table's
 * dummy setting (the first entry's hash: same method and cost as the users
 * when the file is uniform), so timing does not tell which users exist; the
 * result is compared in constant time, and the hash output wiped.
 */
#ifndef RINGMTA_IO_AUTH_TABLE_H
#define RINGMTA_IO_AUTH_TABLE_H

#include <crypt.h>
#include <stdbool.h>
#include <stddef.h>

struct auth_table;

/* Builds a table from file text text[0..len) (need not be NUL-terminated;
 * a NUL inside is an error). Returns the table (owned by the caller), or NULL
 * with err set to "origin:LINE: why". */
struct auth_table *auth_table_parse(const char *text, size_t len, const char *origin,
                                    char *err, size_t errsize);
/* Reads and parses the file at path (blocking). NULL with err set when it
 * cannot be read or has a bad line; the file's text is wiped after parsing. */
struct auth_table *auth_table_load(const char *path, char *err, size_t errsize);
/* Wipes and frees t (NULL is fine); returns NULL. */
struct auth_table *auth_table_free(struct auth_table *t);

/* Number of users. */
size_t auth_table_count(const struct auth_table *t);

/*
 * True when user (NUL-terminated) is in t and pass (NUL-terminated) matches
 * its hash. Blocking, CPU-bound; any thread, scratch is that thread's (no
 * initialization needed beyond zeroing once). Does not wipe pass: the caller
 * owns it.
 */
bool auth_table_verify(const struct auth_table *t, const char *user, const char *pass,
                       struct crypt_data *scratch);

#endif
