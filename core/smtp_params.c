/*
 * smtp_params - ESMTP parameters of MAIL and RCPT, and xtext (RFC 3461 §4).
 *
 * Any thread, no state. One pass over [p, p + len), never past it, never
 * stopping at a NUL. Each parameter is checked in this order, and the first
 * failure ends the command:
 *   1. syntax of "keyword[=value]" (RFC 5321 §4.1.2)       -> 501 5.5.4
 *   2. keyword known for this verb and advertised           -> 555 5.5.4
 *   3. keyword not seen before in this command              -> 501 5.5.4
 *   4. value syntax for that keyword                         -> 501 5.5.4
 * Results are built in a local copy and reach *out only when every parameter
 * passed, so a rejected command leaves *out zeroed: nothing half-stored.
 */
#include "smtp_params.h"

#include <string.h>

/* Far above the six keywords a verb knows: the rest are duplicates or unknown
 * anyway, this only bounds the work a hostile line can cause. */
#define SMTP_PARAMS_MAX 64

/* "SIZE=" value: 1*20DIGIT (RFC 1870 §3). */
#define SMTP_SIZE_DIGITS_MAX 20

enum param_need { NEED_NONE, NEED_DSN, NEED_SMTPUTF8, NEED_AUTH };
enum param_value { VALUE_FORBIDDEN, VALUE_REQUIRED };

/* One parameter as found on the line. */
struct param {
    const char *key;
    size_t keylen;
    const char *val;     /* NULL when there was no '=' */
    size_t vallen;
};

/* ASCII-only, locale-independent comparison of s[0..n) with a C string. */
static bool
smtp_params_ieq(const char *s, size_t n, const char *name)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char a = (unsigned char)s[i], b = (unsigned char)name[i];
        if (b == '\0')
            return false;
        if (a >= 'a' && a <= 'z')
            a = (unsigned char)(a - 'a' + 'A');
        if (b >= 'a' && b <= 'z')
            b = (unsigned char)(b - 'a' + 'A');
        if (a != b)
            return false;
    }
    return name[i] == '\0';
}

static bool
smtp_params_is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int
smtp_params_reject(struct smtp_reject *rej, uint16_t code, const char *text)
{
    rej->code = code;
    rej->enh = "5.5.4";
    rej->text = text;
    return -1;
}

/* Finds the table index of a name in a NULL-terminated list, or -1. */
static int
smtp_params_lookup(const char *const *names, const char *s, size_t n)
{
    for (int i = 0; names[i] != NULL; i++)
        if (smtp_params_ieq(s, n, names[i]))
            return i;
    return -1;
}

/*
 * Splits the next parameter off [*pos, len). RFC 5321 §4.1.2:
 *   esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
 *   esmtp-value   = 1*(%d33-60 / %d62-126)
 * Returns 1 with *pm set, 0 at the end of the line, -1 on a syntax error.
 * Trailing SPs are tolerated, as many clients send them. Only SP separates: TAB, CR, LF and NUL can never occur anywhere.
 */
static int
smtp_params_next(const char *p, size_t len, size_t *pos, struct param *pm)
{
    size_t i = *pos;

    while (i < len && p[i] == ' ')
        i++;
    if (i == len) {
        *pos = i;
        return 0;
    }
    /* "<a@b>SIZE=1": a parameter glued to the path is not one. Later
     * parameters always follow a SP, because each one must end at one. */
    if (i == *pos)
        return -1;
    pm->key = p + i;
    while (i < len && (smtp_params_is_alnum((unsigned char)p[i]) || p[i] == '-'))
        i++;
    pm->keylen = (size_t)(p + i - pm->key);
    if (pm->keylen == 0 || pm->key[0] == '-')
        return -1;
    pm->val = NULL;
    pm->vallen = 0;
    if (i < len && p[i] == '=') {
        i++;
        pm->val = p + i;
        while (i < len && (unsigned char)p[i] >= 33 && (unsigned char)p[i] <= 126 && p[i] != '=')
            i++;
        pm->vallen = (size_t)(p + i - pm->val);
        if (pm->vallen == 0)
            return -1;
    }
    /* The parameter must end at a SP or at the end: anything else here is a
     * control octet, a second '=', or a keyword character out of place. */
    if (i < len && p[i] != ' ')
        return -1;
    *pos = i;
    return 1;
}

static bool
smtp_params_allowed(enum param_need need, const struct smtp_param_caps *caps)
{
    switch (need) {
    case NEED_NONE:
        return true;
    case NEED_DSN:
        return caps->dsn;
    case NEED_SMTPUTF8:
        return caps->smtputf8;
    case NEED_AUTH:
        return caps->auth;
    }
    return false;
}

/* Decodes an xtext value into out, refusing an empty or undecodable one. */
static bool
smtp_params_xtext(const struct param *pm, char *out, size_t outsize)
{
    return pm->vallen > 0 && xtext_decode(pm->val, pm->vallen, out, outsize) > 0;
}

/* ---- MAIL ---- */

typedef bool mail_param_fn(const struct param *pm, struct mail_params *mp);

/* RFC 1870: 1*20DIGIT, no sign; a value that does not fit 64 bits is a
 * syntax error rather than a wrapped small number. */
static bool
mail_param_size(const struct param *pm, struct mail_params *mp)
{
    uint64_t v = 0;

    if (pm->vallen > SMTP_SIZE_DIGITS_MAX)
        return false;
    for (size_t i = 0; i < pm->vallen; i++) {
        unsigned d = (unsigned char)pm->val[i] - '0';
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    mp->has_size = true;
    mp->size = v;
    return true;
}

static bool
mail_param_body(const struct param *pm, struct mail_params *mp)
{
    /* RFC 6152; BINARYMIME (RFC 3030) is not offered. */
    static const char *const names[] = { "7BIT", "8BITMIME", NULL };
    static const enum mail_body values[] = { MAIL_BODY_7BIT, MAIL_BODY_8BITMIME };
    int i = smtp_params_lookup(names, pm->val, pm->vallen);

    if (i < 0)
        return false;
    mp->body = values[i];
    return true;
}

static bool
mail_param_smtputf8(const struct param *pm, struct mail_params *mp)
{
    mp->smtputf8 = true;
    return true;
}

static bool
mail_param_ret(const struct param *pm, struct mail_params *mp)
{
    static const char *const names[] = { "FULL", "HDRS", NULL };
    static const enum mail_ret values[] = { MAIL_RET_FULL, MAIL_RET_HDRS };
    int i = smtp_params_lookup(names, pm->val, pm->vallen);

    if (i < 0)
        return false;
    mp->ret = values[i];
    return true;
}

static bool
mail_param_envid(const struct param *pm, struct mail_params *mp)
{
    if (!smtp_params_xtext(pm, mp->envid, sizeof mp->envid))
        return false;
    mp->has_envid = true;
    return true;
}

/* RFC 4954 §5: AUTH=<> is legal ("<" and ">" are plain xchars) and kept. */
static bool
mail_param_auth(const struct param *pm, struct mail_params *mp)
{
    if (!smtp_params_xtext(pm, mp->auth, sizeof mp->auth))
        return false;
    mp->has_auth = true;
    return true;
}

static const struct mail_param_def {
    const char *name;
    enum param_need need;
    enum param_value value;
    mail_param_fn *parse;
    const char *bad;                 /* 501 text for a bad value */
} mail_param_table[] = {
    { "SIZE", NEED_NONE, VALUE_REQUIRED, mail_param_size, "Bad SIZE parameter syntax" },
    { "BODY", NEED_NONE, VALUE_REQUIRED, mail_param_body, "Bad BODY parameter syntax" },
    /* RFC 6531 §3.4: "SMTPUTF8" takes no value. */
    { "SMTPUTF8", NEED_SMTPUTF8, VALUE_FORBIDDEN, mail_param_smtputf8,
      "Bad SMTPUTF8 parameter syntax" },
    { "RET", NEED_DSN, VALUE_REQUIRED, mail_param_ret, "Bad RET parameter syntax" },
    { "ENVID", NEED_DSN, VALUE_REQUIRED, mail_param_envid, "Bad ENVID parameter syntax" },
    { "AUTH", NEED_AUTH, VALUE_REQUIRED, mail_param_auth, "Bad AUTH parameter syntax" },
};

#define MAIL_PARAM_COUNT (sizeof mail_param_table / sizeof mail_param_table[0])

int
smtp_parse_mail_params(const char *p, size_t len, const struct smtp_param_caps *caps,
                       struct mail_params *out, struct smtp_reject *rej)
{
    struct mail_params mp;
    unsigned seen = 0, count = 0;
    size_t pos = 0;
    struct param pm;
    int r;

    memset(out, 0, sizeof *out);
    memset(&mp, 0, sizeof mp);
    while ((r = smtp_params_next(p, len, &pos, &pm)) > 0) {
        if (++count > SMTP_PARAMS_MAX)
            return smtp_params_reject(rej, 501, "Too many parameters");
        size_t k;
        for (k = 0; k < MAIL_PARAM_COUNT; k++)
            if (smtp_params_ieq(pm.key, pm.keylen, mail_param_table[k].name))
                break;
        if (k == MAIL_PARAM_COUNT || !smtp_params_allowed(mail_param_table[k].need, caps))
            return smtp_params_reject(rej, 555, "Unsupported parameter");
        const struct mail_param_def *def = &mail_param_table[k];
        if (seen & (1u << k))
            return smtp_params_reject(rej, 501, "Duplicate parameter");
        seen |= 1u << k;
        if ((def->value == VALUE_REQUIRED) != (pm.val != NULL) || !def->parse(&pm, &mp))
            return smtp_params_reject(rej, 501, def->bad);
    }
    if (r < 0)
        return smtp_params_reject(rej, 501, "Bad parameter syntax");
    *out = mp;
    return 0;
}

/* ---- RCPT ---- */

typedef bool rcpt_param_fn(const struct param *pm, struct rcpt_params *rp);

/* RFC 3461 §4.1: "NEVER", or a comma list of SUCCESS, FAILURE, DELAY, each
 * at most once; NEVER combines with nothing. */
static bool
rcpt_param_notify(const struct param *pm, struct rcpt_params *rp)
{
    static const char *const names[] = { "NEVER", "SUCCESS", "FAILURE", "DELAY", NULL };
    static const uint8_t bits[] = { NOTIFY_NEVER, NOTIFY_SUCCESS, NOTIFY_FAILURE, NOTIFY_DELAY };
    uint8_t notify = 0;
    size_t i = 0;

    for (;;) {
        size_t start = i;
        while (i < pm->vallen && pm->val[i] != ',')
            i++;
        int k = smtp_params_lookup(names, pm->val + start, i - start);
        if (k < 0 || (notify & bits[k]))
            return false;
        notify |= bits[k];
        if (i == pm->vallen)
            break;
        i++;                         /* the comma; a trailing one fails the lookup */
    }
    if ((notify & NOTIFY_NEVER) && notify != NOTIFY_NEVER)
        return false;
    rp->notify = notify;
    return true;
}

/* RFC 3461 §4.2: ORCPT=addr-type ";" xtext, addr-type an atom such as
 * "rfc822" (or "utf-8", RFC 6533). The type is kept as received. */
static bool
rcpt_param_orcpt(const struct param *pm, struct rcpt_params *rp)
{
    const char *semi = memchr(pm->val, ';', pm->vallen);
    size_t tlen;

    if (semi == NULL)
        return false;
    tlen = (size_t)(semi - pm->val);
    if (tlen == 0 || tlen >= sizeof rp->orcpt_type)
        return false;
    for (size_t i = 0; i < tlen; i++)
        if (!smtp_params_is_alnum((unsigned char)pm->val[i]) && pm->val[i] != '-')
            return false;
    memcpy(rp->orcpt_type, pm->val, tlen);
    rp->orcpt_type[tlen] = '\0';

    struct param x = { .val = semi + 1, .vallen = pm->vallen - tlen - 1 };
    if (!smtp_params_xtext(&x, rp->orcpt, sizeof rp->orcpt))
        return false;
    rp->has_orcpt = true;
    return true;
}

static const struct rcpt_param_def {
    const char *name;
    enum param_need need;
    rcpt_param_fn *parse;
    const char *bad;
} rcpt_param_table[] = {
    { "NOTIFY", NEED_DSN, rcpt_param_notify, "Bad NOTIFY parameter syntax" },
    { "ORCPT", NEED_DSN, rcpt_param_orcpt, "Bad ORCPT parameter syntax" },
};

#define RCPT_PARAM_COUNT (sizeof rcpt_param_table / sizeof rcpt_param_table[0])

int
smtp_parse_rcpt_params(const char *p, size_t len, const struct smtp_param_caps *caps,
                       struct rcpt_params *out, struct smtp_reject *rej)
{
    struct rcpt_params rp;
    unsigned seen = 0, count = 0;
    size_t pos = 0;
    struct param pm;
    int r;

    memset(out, 0, sizeof *out);
    memset(&rp, 0, sizeof rp);
    while ((r = smtp_params_next(p, len, &pos, &pm)) > 0) {
        if (++count > SMTP_PARAMS_MAX)
            return smtp_params_reject(rej, 501, "Too many parameters");
        size_t k;
        for (k = 0; k < RCPT_PARAM_COUNT; k++)
            if (smtp_params_ieq(pm.key, pm.keylen, rcpt_param_table[k].name))
                break;
        if (k == RCPT_PARAM_COUNT || !smtp_params_allowed(rcpt_param_table[k].need, caps))
            return smtp_params_reject(rej, 555, "Unsupported parameter");
        const struct rcpt_param_def *def = &rcpt_param_table[k];
        if (seen & (1u << k))
            return smtp_params_reject(rej, 501, "Duplicate parameter");
        seen |= 1u << k;
        /* Both RCPT keywords take a value. */
        if (pm.val == NULL || !def->parse(&pm, &rp))
            return smtp_params_reject(rej, 501, def->bad);
    }
    if (r < 0)
        return smtp_params_reject(rej, 501, "Bad parameter syntax");
    *out = rp;
    return 0;
}

/* ---- xtext ---- */

static int
xtext_hexval(unsigned char c)
{
    /* RFC 3461 §4: "two upper case hexadecimal digits"; lowercase is refused
     * so that each octet has one encoding. */
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int
xtext_decode(const char *in, size_t inlen, char *out, size_t outsize)
{
    size_t o = 0;

    if (outsize == 0)
        return -1;
    for (size_t i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '+') {
            if (inlen - i < 3)
                return -1;
            int hi = xtext_hexval((unsigned char)in[i + 1]);
            int lo = xtext_hexval((unsigned char)in[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (unsigned char)(hi << 4 | lo);
            /* The decoded text ends up in DSNs and logs: no controls, no
             * CR/LF/NUL that could split or cut a line, no 8-bit. */
            if (c < 0x20 || c > 0x7e)
                return -1;
            i += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            return -1;
        }
        if (o + 1 >= outsize)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return (int)o;
}

int
xtext_encode(const char *in, size_t inlen, char *out, size_t outsize)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (size_t i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c >= 33 && c <= 126 && c != '+' && c != '=') {
            if (o + 1 >= outsize)
                return -1;
            out[o++] = (char)c;
        } else {
            if (o + 3 >= outsize)
                return -1;
            out[o++] = '+';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    if (o >= outsize)
        return -1;
    out[o] = '\0';
    return (int)o;
}
