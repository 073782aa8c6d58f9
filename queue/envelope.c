/*
 * envelope - the SMTP envelope of one message and its TLV spool encoding.
 *
 * Any thread, no state: an envelope is plain data owned by whoever holds it.
 *
 * Encoding (all integers little-endian): a sequence of fields
 *     u16 tag | u32 len | len octets
 * VERSION comes first and END (empty) last, so every truncation is refused,
 * even one between fields. Strings are raw octets (no terminator), so CR, LF
 * and NUL survive (RELIABILITY row 15). Each recipient is one RCPT field
 * whose value is a sequence of fields (ADDR, ORCPT, NOTIFY). Integers have
 * fixed widths and a field of the wrong width is malformed.
 *
 * Invariants: decode never reads outside p[0..len); unknown tags are skipped
 * at both levels, so later versions may add fields; ENVELOPE_VERSION changes
 * only for incompatible changes and a different version is refused. A string
 * or integer field given twice is malformed (no silent last-wins).
 *
 * Hazards: struct envelope holds NUL-terminated strings without a length.
 * Decode keeps a field whole (it allocates len + 1 and copies every octet),
 * but a field with an embedded NUL looks shorter to strlen and would be
 * truncated by a re-encode. The SMTP parser never lets NUL into an address
 * (RELIABILITY row 26), so this only matters for hand-made input.
 */
#include "envelope.h"

#include <string.h>

#include "alloc.h"
#include "le.h"

#define ENVELOPE_VERSION 1u

enum envelope_tag {
    ENV_TAG_END = 0,         /* empty, last; nothing may follow */
    ENV_TAG_VERSION = 1,     /* u32 */
    ENV_TAG_SENDER = 2,      /* string; "" for <> */
    ENV_TAG_RCPT = 3,        /* nested fields, one per recipient */
    ENV_TAG_CLIENT_ADDR = 4, /* string */
    ENV_TAG_CLIENT_HELO = 5, /* string */
    ENV_TAG_AUTH_ID = 6,     /* string, absent = NULL */
    ENV_TAG_ENVID = 7,       /* string, absent = NULL */
    ENV_TAG_ARRIVAL = 8,     /* u64 ms */
    ENV_TAG_SIZE_HINT = 9,   /* u64 */
    ENV_TAG_BODY_TYPE = 10,  /* u8 */
    ENV_TAG_RET = 11,        /* u8 */
    ENV_TAG_SMTPUTF8 = 12,   /* u8 0/1 */
};

enum envelope_rcpt_tag {
    ENV_RTAG_ADDR = 1,   /* string */
    ENV_RTAG_ORCPT = 2,  /* string, absent = NULL */
    ENV_RTAG_NOTIFY = 3, /* u8 */
};

#define ENV_FIELD_HDR 6u /* u16 tag + u32 len */

/* --- little-endian helpers --- */

static uint8_t *
envelope_put_u16(uint8_t *p, uint16_t v)
{
    le_put_u16(p, v);
    return p + 2;
}

static uint8_t *
envelope_put_u32(uint8_t *p, uint32_t v)
{
    le_put_u32(p, v);
    return p + 4;
}

static uint8_t *
envelope_put_u64(uint8_t *p, uint64_t v)
{
    le_put_u64(p, v);
    return p + 8;
}

/* --- encoding --- */

static size_t
envelope_str_size(const char *s)
{
    return s ? ENV_FIELD_HDR + strlen(s) : 0;
}

static size_t
envelope_rcpt_size(const struct envelope_rcpt *r)
{
    return ENV_FIELD_HDR + (ENV_FIELD_HDR + (r->addr ? strlen(r->addr) : 0))
           + envelope_str_size(r->orcpt) + (ENV_FIELD_HDR + 1);
}

/* Exact encoded size of env. */
size_t
envelope_encoded_size(const struct envelope *env)
{
    size_t n = ENV_FIELD_HDR + 4;                                   /* version */
    n += ENV_FIELD_HDR + (env->sender ? strlen(env->sender) : 0);   /* always */
    for (uint32_t i = 0; i < env->nrcpt; i++)
        n += envelope_rcpt_size(&env->rcpts[i]);
    n += envelope_str_size(env->client_addr);
    n += envelope_str_size(env->client_helo);
    n += envelope_str_size(env->auth_id);
    n += envelope_str_size(env->envid);
    n += 2 * (ENV_FIELD_HDR + 8);   /* arrival, size_hint */
    n += 3 * (ENV_FIELD_HDR + 1);   /* body_type, ret, smtputf8 */
    n += ENV_FIELD_HDR;             /* end */
    return n;
}

static uint8_t *
envelope_put_field(uint8_t *p, uint16_t tag, const void *v, size_t len)
{
    p = envelope_put_u16(p, tag);
    p = envelope_put_u32(p, (uint32_t)len);
    if (len)
        memcpy(p, v, len);
    return p + len;
}

static uint8_t *
envelope_put_str(uint8_t *p, uint16_t tag, const char *s)
{
    return envelope_put_field(p, tag, s ? s : "", s ? strlen(s) : 0);
}

static uint8_t *
envelope_put_u8_field(uint8_t *p, uint16_t tag, uint8_t v)
{
    return envelope_put_field(p, tag, &v, 1);
}

static uint8_t *
envelope_put_u64_field(uint8_t *p, uint16_t tag, uint64_t v)
{
    uint8_t b[8];
    envelope_put_u64(b, v);
    return envelope_put_field(p, tag, b, 8);
}

/* Writes exactly envelope_encoded_size(env) octets to out. */
void
envelope_encode(const struct envelope *env, uint8_t *out)
{
    uint8_t *p = out;
    uint8_t ver[4];

    envelope_put_u32(ver, ENVELOPE_VERSION);
    p = envelope_put_field(p, ENV_TAG_VERSION, ver, 4);
    p = envelope_put_str(p, ENV_TAG_SENDER, env->sender);
    for (uint32_t i = 0; i < env->nrcpt; i++) {
        const struct envelope_rcpt *r = &env->rcpts[i];
        size_t inner = envelope_rcpt_size(r) - ENV_FIELD_HDR;
        p = envelope_put_u16(p, ENV_TAG_RCPT);
        p = envelope_put_u32(p, (uint32_t)inner);
        p = envelope_put_str(p, ENV_RTAG_ADDR, r->addr);
        if (r->orcpt)
            p = envelope_put_str(p, ENV_RTAG_ORCPT, r->orcpt);
        p = envelope_put_u8_field(p, ENV_RTAG_NOTIFY, r->notify);
    }
    if (env->client_addr)
        p = envelope_put_str(p, ENV_TAG_CLIENT_ADDR, env->client_addr);
    if (env->client_helo)
        p = envelope_put_str(p, ENV_TAG_CLIENT_HELO, env->client_helo);
    if (env->auth_id)
        p = envelope_put_str(p, ENV_TAG_AUTH_ID, env->auth_id);
    if (env->envid)
        p = envelope_put_str(p, ENV_TAG_ENVID, env->envid);
    p = envelope_put_u64_field(p, ENV_TAG_ARRIVAL, env->arrival_ms);
    p = envelope_put_u64_field(p, ENV_TAG_SIZE_HINT, env->size_hint);
    p = envelope_put_u8_field(p, ENV_TAG_BODY_TYPE, env->body_type);
    p = envelope_put_u8_field(p, ENV_TAG_RET, env->ret);
    p = envelope_put_u8_field(p, ENV_TAG_SMTPUTF8, env->smtputf8 ? 1 : 0);
    envelope_put_field(p, ENV_TAG_END, NULL, 0);
}

/* --- decoding --- */

/* A cursor over a field sequence; every read is checked against end. */
struct envelope_cursor {
    const uint8_t *p;
    const uint8_t *end;
};

/* Next field: 1 with tag/value set, 0 at the clean end, -1 when truncated. */
static int
envelope_next(struct envelope_cursor *c, uint16_t *tag, const uint8_t **val,
              size_t *len)
{
    size_t left = (size_t)(c->end - c->p);
    if (left == 0)
        return 0;
    if (left < ENV_FIELD_HDR)
        return -1;
    uint32_t l = le_get_u32(c->p + 2);
    if (l > left - ENV_FIELD_HDR)
        return -1;
    *tag = le_get_u16(c->p);
    *val = c->p + ENV_FIELD_HDR;
    *len = l;
    c->p += ENV_FIELD_HDR + l;
    return 1;
}

/* Copies a string field: all len octets, then a NUL. Refuses duplicates. */
static int
envelope_take_str(char **dst, const uint8_t *val, size_t len)
{
    if (*dst != NULL)
        return -1;
    char *s = xmalloc(len + 1);
    if (len)
        memcpy(s, val, len);
    s[len] = '\0';
    *dst = s;
    return 0;
}

static int
envelope_take_u8(uint8_t *dst, bool *seen, const uint8_t *val, size_t len)
{
    if (len != 1 || *seen)
        return -1;
    *dst = val[0];
    *seen = true;
    return 0;
}

static int
envelope_take_u64(uint64_t *dst, bool *seen, const uint8_t *val, size_t len)
{
    if (len != 8 || *seen)
        return -1;
    *dst = le_get_u64(val);
    *seen = true;
    return 0;
}

static int
envelope_decode_rcpt(const uint8_t *p, size_t len, struct envelope_rcpt *r)
{
    struct envelope_cursor c = { p, p + len };
    uint16_t tag;
    const uint8_t *val;
    size_t vlen;
    bool seen_notify = false;
    int rc;

    while ((rc = envelope_next(&c, &tag, &val, &vlen)) == 1) {
        switch (tag) {
        case ENV_RTAG_ADDR:
            rc = envelope_take_str(&r->addr, val, vlen);
            break;
        case ENV_RTAG_ORCPT:
            rc = envelope_take_str(&r->orcpt, val, vlen);
            break;
        case ENV_RTAG_NOTIFY:
            rc = envelope_take_u8(&r->notify, &seen_notify, val, vlen);
            break;
        default:
            rc = 0; /* unknown: skipped */
            break;
        }
        if (rc < 0)
            return -1;
    }
    if (rc < 0 || r->addr == NULL)
        return -1;
    r->state = RCPT_PENDING;
    return 0;
}

/* Decodes p[0..len) into a fresh envelope. Returns 0 or -1 (out zeroed). */
int
envelope_decode(const uint8_t *p, size_t len, struct envelope *out)
{
    struct envelope_cursor c = { p, p + len };
    uint16_t tag;
    const uint8_t *val;
    size_t vlen;
    uint32_t nrcpt = 0;
    bool ended = false;
    bool seen_arrival = false, seen_size = false, seen_body = false;
    bool seen_ret = false, seen_utf8 = false;
    uint8_t utf8 = 0;
    int rc;

    memset(out, 0, sizeof *out);

    /* Pass 1: bounds, version first, END last, and the recipient count. */
    rc = envelope_next(&c, &tag, &val, &vlen);
    if (rc != 1 || tag != ENV_TAG_VERSION || vlen != 4
        || le_get_u32(val) != ENVELOPE_VERSION)
        return -1;
    while ((rc = envelope_next(&c, &tag, &val, &vlen)) == 1) {
        if (ended)
            return -1; /* octets after END */
        if (tag == ENV_TAG_END) {
            if (vlen != 0)
                return -1;
            ended = true;
        } else if (tag == ENV_TAG_RCPT) {
            if (nrcpt == UINT32_MAX)
                return -1;
            nrcpt++;
        }
    }
    if (rc < 0 || !ended)
        return -1;

    /* Pass 2: fill. Every failure after this point frees what was built. */
    if (nrcpt)
        out->rcpts = xcalloc(nrcpt, sizeof *out->rcpts);
    c.p = p;
    envelope_next(&c, &tag, &val, &vlen); /* version, checked above */
    while (envelope_next(&c, &tag, &val, &vlen) == 1) {
        switch (tag) {
        case ENV_TAG_SENDER:
            rc = envelope_take_str(&out->sender, val, vlen);
            break;
        case ENV_TAG_RCPT:
            rc = envelope_decode_rcpt(val, vlen, &out->rcpts[out->nrcpt]);
            out->nrcpt++; /* counted even on failure so free sees it */
            break;
        case ENV_TAG_CLIENT_ADDR:
            rc = envelope_take_str(&out->client_addr, val, vlen);
            break;
        case ENV_TAG_CLIENT_HELO:
            rc = envelope_take_str(&out->client_helo, val, vlen);
            break;
        case ENV_TAG_AUTH_ID:
            rc = envelope_take_str(&out->auth_id, val, vlen);
            break;
        case ENV_TAG_ENVID:
            rc = envelope_take_str(&out->envid, val, vlen);
            break;
        case ENV_TAG_ARRIVAL:
            rc = envelope_take_u64(&out->arrival_ms, &seen_arrival, val, vlen);
            break;
        case ENV_TAG_SIZE_HINT:
            rc = envelope_take_u64(&out->size_hint, &seen_size, val, vlen);
            break;
        case ENV_TAG_BODY_TYPE:
            rc = envelope_take_u8(&out->body_type, &seen_body, val, vlen);
            break;
        case ENV_TAG_RET:
            rc = envelope_take_u8(&out->ret, &seen_ret, val, vlen);
            break;
        case ENV_TAG_SMTPUTF8:
            rc = envelope_take_u8(&utf8, &seen_utf8, val, vlen);
            if (rc == 0 && utf8 > 1)
                rc = -1;
            break;
        case ENV_TAG_VERSION:
            rc = -1; /* given twice */
            break;
        case ENV_TAG_END:
            rc = 0;
            break;
        default:
            rc = 0; /* unknown: skipped */
            break;
        }
        if (rc < 0)
            goto bad;
    }
    if (out->sender == NULL)
        goto bad;
    out->smtputf8 = utf8 != 0;
    return 0;

bad:
    envelope_free(out);
    return -1;
}

static char *
envelope_strdup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

/* Deep copy of src into dst (dst's old contents are not freed). */
void
envelope_copy(struct envelope *dst, const struct envelope *src)
{
    *dst = *src;
    dst->sender = envelope_strdup_or_null(src->sender);
    dst->client_addr = envelope_strdup_or_null(src->client_addr);
    dst->client_helo = envelope_strdup_or_null(src->client_helo);
    dst->auth_id = envelope_strdup_or_null(src->auth_id);
    dst->envid = envelope_strdup_or_null(src->envid);
    dst->rcpts = NULL;
    if (src->nrcpt) {
        dst->rcpts = xcalloc(src->nrcpt, sizeof *dst->rcpts);
        for (uint32_t i = 0; i < src->nrcpt; i++) {
            dst->rcpts[i] = src->rcpts[i];
            dst->rcpts[i].addr = envelope_strdup_or_null(src->rcpts[i].addr);
            dst->rcpts[i].orcpt = envelope_strdup_or_null(src->rcpts[i].orcpt);
        }
    }
}

/* Frees every string and the recipient array; env is left zeroed. */
void
envelope_free(struct envelope *env)
{
    if (env == NULL)
        return;
    xfree(env->sender);
    xfree(env->client_addr);
    xfree(env->client_helo);
    xfree(env->auth_id);
    xfree(env->envid);
    for (uint32_t i = 0; i < env->nrcpt; i++) {
        xfree(env->rcpts[i].addr);
        xfree(env->rcpts[i].orcpt);
    }
    xfree(env->rcpts);
    memset(env, 0, sizeof *env);
}
