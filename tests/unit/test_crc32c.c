#include <criterion/criterion.h>
#include <string.h>

#include "crc32c.h"

/* RFC 3720 appendix B.4 check values. */
Test(crc32c, matches_rfc3720_vectors)
{
    uint8_t buf[32];
    memset(buf, 0, sizeof buf);
    cr_assert_eq(crc32c(0, buf, 32), 0x8a9136aau);
    memset(buf, 0xff, sizeof buf);
    cr_assert_eq(crc32c(0, buf, 32), 0x62a8ab43u);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)i;
    cr_assert_eq(crc32c(0, buf, 32), 0x46dd794eu);
    cr_assert_eq(crc32c(0, "123456789", 9), 0xe3069283u);
}

Test(crc32c, incremental_equals_one_shot)
{
    char text[1000];
    for (size_t i = 0; i < sizeof text; i++)
        text[i] = (char)(i * 31 + 7);
    uint32_t whole = crc32c(0, text, sizeof text);
    for (size_t cut = 0; cut <= sizeof text; cut += 37) {
        uint32_t c = crc32c(0, text, cut);
        c = crc32c(c, text + cut, sizeof text - cut);
        cr_assert_eq(c, whole, "split at %zu", cut);
    }
}
