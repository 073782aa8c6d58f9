/*
 * sasl - server side PLAIN and LOGIN exchanges (RFC 4954, RFC 4616).
 *
 * Per-connection, owned by the session's thread; no I/O, no state outside
 * struct sasl_server. Every client response goes the same way: "*" cancels;
 * otherwise it is decoded (strictly, core/base64) into a stack buffer sized
 * for the longest acceptable PLAIN message, so a longer response fails to fit
 * and is refused without ever being stored; the mechanism then takes its
 * fields out of the buffer, and the buffer is wiped before returning.
 * A status that ends the exchange wipes the whole state first (sasl_finish),
 * so no path can leave a half-filled user or password behind.
 */
#include "sasl.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "base64.h"
#include "utf8.h"

/* authzid NUL authcid NUL passwd, each at its maximum. */
#define SASL_RESPONSE_MAX (SASL_USER_MAX + 1 + SASL_USER_MAX + 1 + SASL_PASS_MAX)

/* The two LOGIN prompts (draft-murchison-sasl-login), sent base64 encoded. */
static const char sasl_login_user_prompt[] = "Username:";
static const char sasl_login_pass_prompt[] = "Password:";

static const struct sasl_mech_def {
    const char *name;
    enum sasl_mech mech;
    enum sasl_step first;        /* the response the mechanism waits for */
    const char *prompt;          /* its first challenge, before encoding */
} sasl_mech_table[] = {
    /* RFC 4616 §2: "The mechanism consists of a single message", sent after
     * an empty challenge when there was no initial response. */
    { "PLAIN", SASL_MECH_PLAIN, SASL_STEP_PLAIN_RESPONSE, "" },
    { "LOGIN", SASL_MECH_LOGIN, SASL_STEP_LOGIN_USER, sasl_login_user_prompt },
};

#define SASL_NMECHS (sizeof sasl_mech_table / sizeof sasl_mech_table[0])

void
sasl_server_init(struct sasl_server *s)
{
    memset(s, 0, sizeof *s);
}

void
sasl_server_reset(struct sasl_server *s)
{
    explicit_bzero(s, sizeof *s);
}

const char *
sasl_mech_list(void)
{
    return "PLAIN LOGIN";
}

const char *
sasl_status_reply(enum sasl_status st)
{
    switch (st) {
    case SASL_CHALLENGE:
    case SASL_CHECK:
        return NULL;
    case SASL_BAD_MECH:
        return "504 5.5.4 Unrecognized authentication type";
    case SASL_BAD_SYNTAX:
        return "501 5.5.2 Cannot decode response";
    case SASL_CANCELLED:
        return "501 5.7.0 Authentication aborted";
    case SASL_BAD_CREDS_FORMAT:
        return "535 5.7.8 Authentication credentials invalid";
    }
    return NULL;
}

bool
sasl_user_valid(const char *p, size_t len)
{
    const unsigned char *u = (const unsigned char *)p;

    if (len == 0 || len > SASL_USER_MAX || !utf8_valid(p, len))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (u[i] < 0x20 || u[i] == 0x7f)
            return false;
        /* U+0080..U+009F (C1 controls) are C2 80..C2 9F; valid UTF-8 has a
         * continuation octet after C2, so u[i + 1] exists. */
        if (u[i] == 0xc2 && u[i + 1] < 0xa0)
            return false;
    }
    return true;
}

/* Ends the exchange with st, wiping everything first. */
static enum sasl_status
sasl_finish(struct sasl_server *s, enum sasl_status st)
{
    sasl_server_reset(s);
    return st;
}

/* Writes prompt, base64 encoded, as the next challenge; waits for step. */
static enum sasl_status
sasl_challenge(struct sasl_server *s, enum sasl_step step, const char *prompt,
               char *challenge, size_t cap)
{
    size_t n = strlen(prompt);

    if (cap < BASE64_ENCODED_SIZE(n))
        return sasl_finish(s, SASL_BAD_SYNTAX);
    base64_encode((const uint8_t *)prompt, n, challenge, cap);
    s->step = step;
    return SASL_CHALLENGE;
}

/* Copies a decoded field into dst (room for max + NUL) and sets *dstlen. */
static void
sasl_store(char *dst, size_t *dstlen, const uint8_t *src, size_t n)
{
    memcpy(dst, src, n);
    dst[n] = '\0';
    *dstlen = n;
}

/*
 * RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd. Exactly
 * two NULs: one field more or less is malformed, not merely wrong. We act
 * for no one else, so an authzid must be empty or name the authcid itself.
 */
static enum sasl_status
sasl_plain(struct sasl_server *s, const uint8_t *m, size_t n)
{
    const uint8_t *nul1 = memchr(m, '\0', n), *nul2;

    if (nul1 == NULL)
        return SASL_BAD_SYNTAX;
    nul2 = memchr(nul1 + 1, '\0', n - (size_t)(nul1 + 1 - m));
    if (nul2 == NULL)
        return SASL_BAD_SYNTAX;
    const uint8_t *authzid = m, *authcid = nul1 + 1, *passwd = nul2 + 1;
    size_t zlen = (size_t)(nul1 - m), clen = (size_t)(nul2 - authcid);
    size_t plen = n - (size_t)(passwd - m);
    if (memchr(passwd, '\0', plen) != NULL)
        return SASL_BAD_SYNTAX;
    if (zlen > SASL_USER_MAX || clen > SASL_USER_MAX || plen > SASL_PASS_MAX)
        return SASL_BAD_SYNTAX;
    if (clen == 0 || plen == 0)
        return SASL_BAD_CREDS_FORMAT;
    if (zlen != 0 && (zlen != clen || memcmp(authzid, authcid, clen) != 0))
        return SASL_BAD_CREDS_FORMAT;
    if (!sasl_user_valid((const char *)authcid, clen))
        return SASL_BAD_CREDS_FORMAT;
    sasl_store(s->user, &s->user_len, authcid, clen);
    sasl_store(s->pass, &s->pass_len, passwd, plen);
    s->step = SASL_STEP_DONE;
    return SASL_CHECK;
}

/* Checks one LOGIN field: 1..max octets without NUL (a user name also clean
 * UTF-8). SASL_CHECK means usable; anything else ends the exchange. */
static enum sasl_status
sasl_login_field(const uint8_t *m, size_t n, size_t max, bool is_user)
{
    if (n > max)
        return SASL_BAD_SYNTAX;
    if (n == 0 || memchr(m, '\0', n) != NULL)
        return SASL_BAD_CREDS_FORMAT;
    if (is_user && !sasl_user_valid((const char *)m, n))
        return SASL_BAD_CREDS_FORMAT;
    return SASL_CHECK;
}

/* Applies one decoded response m[0..n) to the step the exchange is at. */
static enum sasl_status
sasl_apply(struct sasl_server *s, const uint8_t *m, size_t n, char *challenge, size_t cap)
{
    enum sasl_status st;

    switch (s->step) {
    case SASL_STEP_PLAIN_RESPONSE:
        return sasl_plain(s, m, n);
    case SASL_STEP_LOGIN_USER:
        if ((st = sasl_login_field(m, n, SASL_USER_MAX, true)) != SASL_CHECK)
            return st;
        sasl_store(s->user, &s->user_len, m, n);
        return sasl_challenge(s, SASL_STEP_LOGIN_PASS, sasl_login_pass_prompt, challenge,
                              cap);
    case SASL_STEP_LOGIN_PASS:
        if ((st = sasl_login_field(m, n, SASL_PASS_MAX, false)) != SASL_CHECK)
            return st;
        sasl_store(s->pass, &s->pass_len, m, n);
        s->step = SASL_STEP_DONE;
        return SASL_CHECK;
    case SASL_STEP_IDLE:
    case SASL_STEP_DONE:
        break;
    }
    return SASL_BAD_SYNTAX;
}

/* A client response: "*" cancels, anything else must be canonical base64 of
 * at most SASL_RESPONSE_MAX octets. */
static enum sasl_status
sasl_response(struct sasl_server *s, const char *line, size_t len, char *challenge,
              size_t cap)
{
    uint8_t m[SASL_RESPONSE_MAX];
    size_t n;
    enum sasl_status st;

    if (len == 1 && line[0] == '*')
        return sasl_finish(s, SASL_CANCELLED);
    if (base64_decode(line, len, m, sizeof m, &n) != 0)
        return sasl_finish(s, SASL_BAD_SYNTAX);
    st = sasl_apply(s, m, n, challenge, cap);
    explicit_bzero(m, n);
    if (st != SASL_CHALLENGE && st != SASL_CHECK)
        return sasl_finish(s, st);
    return st;
}

enum sasl_status
sasl_server_start(struct sasl_server *s, const char *args, size_t len, char *challenge,
                  size_t cap)
{
    const struct sasl_mech_def *def = NULL;
    const char *sp = memchr(args, ' ', len);
    size_t namelen = sp != NULL ? (size_t)(sp - args) : len;

    sasl_server_reset(s);
    while (len > namelen && args[len - 1] == ' ')
        len--;
    if (namelen == 0)
        return SASL_BAD_SYNTAX;
    /* Matched without regard to case, like every SMTP keyword (RFC 5321
     * §2.4); a NUL in args differs from every name (strncasecmp stops only
     * where both strings do). */
    for (size_t i = 0; i < SASL_NMECHS; i++)
        if (strlen(sasl_mech_table[i].name) == namelen
            && strncasecmp(args, sasl_mech_table[i].name, namelen) == 0)
            def = &sasl_mech_table[i];
    if (def == NULL)
        return SASL_BAD_MECH;
    s->mech = def->mech;
    s->step = def->first;
    if (len == namelen)
        return sasl_challenge(s, def->first, def->prompt, challenge, cap);
    /* RFC 4954 §4: "=" is an initial response of zero length, as distinct
     * from no initial response at all. */
    const char *ir = args + namelen + 1;
    size_t irlen = len - namelen - 1;
    if (irlen == 1 && ir[0] == '=')
        irlen = 0;
    return sasl_response(s, ir, irlen, challenge, cap);
}

enum sasl_status
sasl_server_step(struct sasl_server *s, const char *line, size_t len, char *challenge,
                 size_t cap)
{
    if (s->step != SASL_STEP_PLAIN_RESPONSE && s->step != SASL_STEP_LOGIN_USER
        && s->step != SASL_STEP_LOGIN_PASS)
        return sasl_finish(s, SASL_BAD_SYNTAX);
    return sasl_response(s, line, len, challenge, cap);
}
