/**
 * The CA certificates `--mqtt-ca` names: read through libc like every other path the launcher
 * is given, so the launcher can check the file before it starts anything and the bridge can
 * load it, with the same clear error in both.
 *
 * @module
 */

import { X509Certificate } from "node:crypto";
import * as C from "../../ffi/constants.ts";
import { closeFd, openPath, readFd, statFd } from "../../ffi/posix.ts";
import { failure } from "../../lib/errors.ts";

/** The largest CA file read: a bundle of every public CA is about 200 KiB. */
const MAX_BYTES = 1 << 20;
const PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----";
const PEM_END = "-----END CERTIFICATE-----";

/**
 * Reads the PEM file at `path`; throws unless it is a file that holds a certificate, and every
 * certificate in it parses: one that does not would fail each TLS connection later, with words
 * that hide the file.
 */
export function readCaFile(path: string): string {
  const action = "read the MQTT CA certificates (--mqtt-ca) in";
  // O_NONBLOCK: a FIFO with no writer would block open() forever, signals and all; it is
  // refused below like any other file that is not a regular one.
  const fd = openPath(path, C.O_RDONLY | C.O_CLOEXEC | C.O_NOCTTY | C.O_NONBLOCK, 0, action);
  try {
    const stat = statFd(fd, path);
    if (stat.type !== "file") {
      throw failure(
        Deno.errors.InvalidData,
        action,
        path,
        `it is a ${stat.type}, not a regular file`,
      );
    }
    if (stat.size > MAX_BYTES) {
      throw failure(Deno.errors.InvalidData, action, path, "it is larger than 1 MiB");
    }
    const bytes = new Uint8Array(stat.size + 1);
    let length = 0;
    for (
      let count;
      length < bytes.length && (count = readFd(fd, bytes.subarray(length), path)) > 0;
    ) {
      length += count;
    }
    const text = new TextDecoder().decode(bytes.subarray(0, length));
    if (!text.includes(PEM_CERTIFICATE)) {
      throw failure(
        Deno.errors.InvalidData,
        action,
        path,
        `it holds no PEM certificate (a "${PEM_CERTIFICATE}" line)`,
      );
    }
    checkCertificates(text, (why) => failure(Deno.errors.InvalidData, action, path, why));
    return text;
  } finally {
    closeFd(fd);
  }
}

/** Throws `refuse(why)` unless each PEM certificate block in `text` is a whole X.509 certificate. */
function checkCertificates(text: string, refuse: (why: string) => Error): void {
  const begins = text.split(PEM_CERTIFICATE).length - 1;
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length !== begins) {
    throw refuse(`a "${PEM_CERTIFICATE}" line has no "${PEM_END}" line after it`);
  }
  blocks.forEach((block, index) => {
    try {
      new X509Certificate(block);
    } catch (error) {
      const which = blocks.length === 1 ? "its certificate" : `its certificate ${index + 1}`;
      throw refuse(`${which} is not a valid X.509 certificate (${(error as Error).message})`);
    }
  });
}
