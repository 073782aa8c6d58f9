/*
 * crc32c - CRC-32C (Castagnoli), the checksum of every spool record.
 *
 * Any thread, no state. Uses the SSE4.2 crc32 instruction when the CPU has it
 * (checked once), a slicing table otherwise; both give identical results.
 */
#ifndef RINGMTA_CORE_CRC32C_H
#define RINGMTA_CORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC: crc32c(0, ...) starts one; feed the result back to extend it. */
uint32_t crc32c(uint32_t crc, const void *data, size_t len);

#endif
