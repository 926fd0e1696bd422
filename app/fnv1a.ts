/**
 * FNV-1a, the small non-cryptographic hash the project uses where a name must be short and the
 * same on every machine and version: MQTT client ids and Home Assistant device ids (32 bits),
 * and the launcher's claim records (64 bits).
 *
 * @module
 */

const PARAMETERS = {
  32: { offset: 0x811c9dc5n, prime: 0x01000193n, mask: 0xffff_ffffn },
  64: { offset: 0xcbf29ce484222325n, prime: 0x100000001b3n, mask: 0xffff_ffff_ffff_ffffn },
} as const;

const encoder = new TextEncoder();

/** The `bits`-bit FNV-1a hash of `text`'s UTF-8 bytes, as `bits / 4` lower-case hex digits. */
export function fnv1a(text: string, bits: 32 | 64): string {
  const { offset, prime, mask } = PARAMETERS[bits];
  let hash: bigint = offset;
  for (const byte of encoder.encode(text)) hash = ((hash ^ BigInt(byte)) * prime) & mask;
  return hash.toString(16).padStart(bits / 4, "0");
}
