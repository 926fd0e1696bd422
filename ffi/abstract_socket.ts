/**
 * Names in Linux's abstract Unix socket namespace, one per machine (per network namespace)
 * and shared by every user: a listening socket bound to a name holds it, a second bind fails
 * with EADDRINUSE, and the name is gone with the socket, so a process that dies (SIGKILL
 * included) leaves nothing to clean up. A connect to a held name tells who holds it
 * (SO_PEERCRED); the holder reads nothing, and drops each connection it is handed
 * ({@link dropConnections}), so its queue never fills.
 *
 * @module
 */

import * as C from "./constants.ts";
import { attempt, Errno, lastErrno, osError, retryFailed } from "./errno.ts";
import { libc } from "./libc.ts";
import { closeFd } from "./posix.ts";

const encoder = new TextEncoder();
/**
 * Connections a held name queues until its holder drops them: past these, a bind that fails
 * still says the name is held, but not by whom.
 */
const BACKLOG = 16;
/** `struct ucred { pid_t pid; uid_t uid; gid_t gid; }` */
const UCRED_BYTES = 12;

/** Who holds an abstract name: the holder's pid in this pid namespace (0 if not in it) and uid. */
export interface NameHolder {
  pid: number;
  uid: number;
}

/** `struct sockaddr_un` for the abstract `name`, and its length as bind(2) and connect(2) take it. */
function address(name: string): { bytes: Uint8Array<ArrayBuffer>; length: number } {
  const path = encoder.encode(name);
  // The leading NUL that makes the name abstract counts in the path's 108 bytes.
  if (path.length === 0 || path.length + 1 > C.SOCKADDR_UN_PATH_BYTES || path.includes(0)) {
    throw new TypeError(
      `Abstract socket name ${JSON.stringify(name)} is not 1 to ${
        C.SOCKADDR_UN_PATH_BYTES - 1
      } bytes without a NUL`,
    );
  }
  const bytes = new Uint8Array(2 + C.SOCKADDR_UN_PATH_BYTES);
  new DataView(bytes.buffer).setUint16(0, C.AF_UNIX, true);
  bytes.set(path, 3);
  // Only the bytes given count: the name is exactly these, with no padding of NULs.
  return { bytes, length: 3 + path.length };
}

function openSocket(name: string, flags: number): number {
  return attempt(
    () => libc().socket(C.AF_UNIX, C.SOCK_STREAM | C.SOCK_CLOEXEC | flags, 0),
    "open a socket for",
    name,
  );
}

/**
 * Holds the abstract `name`: returns the listening socket's fd (close-on-exec, nonblocking),
 * whose close gives the name up. Throws `AddrInUse` when another socket holds it.
 */
export function holdAbstractName(name: string): number {
  const { bytes, length } = address(name);
  const fd = openSocket(name, C.SOCK_NONBLOCK);
  try {
    attempt(() => libc().bind(fd, bytes, length), "hold the name", name);
    attempt(() => libc().listen(fd, BACKLOG), "listen on the name", name);
    return fd;
  } catch (error) {
    closeFd(fd);
    throw error;
  }
}

/**
 * Who holds the abstract `name`, or undefined when nobody does (or nobody who listens, or a
 * holder whose queue is full).
 */
export function abstractNameHolder(name: string): NameHolder | undefined {
  const { bytes, length } = address(name);
  const fd = openSocket(name, C.SOCK_NONBLOCK);
  try {
    const connect = (): number => libc().connect(fd, bytes, length);
    if (connect() < 0) {
      const errno = lastErrno();
      const retried = errno === Errno.EAGAIN ? { ok: false as const, errno } : retryFailed(connect);
      if (!retried.ok) return undefined;
    }
    const credentials = new Uint8Array(UCRED_BYTES);
    const size = new Uint8Array(new Uint32Array([UCRED_BYTES]).buffer);
    const got = libc().getsockopt(fd, C.SOL_SOCKET, C.SO_PEERCRED, credentials, size);
    if (got < 0) throw osError("ask who holds", name, lastErrno());
    const view = new DataView(credentials.buffer);
    return { pid: view.getInt32(0, true), uid: view.getUint32(4, true) };
  } finally {
    closeFd(fd);
  }
}

/**
 * Accepts and closes every connection queued on the held name's socket `fd` (each one only
 * asked who holds it), so that the queue never fills and later askers are told too.
 */
export function dropConnections(fd: number): void {
  for (;;) {
    const connection = libc().accept4(fd, null, null, C.SOCK_CLOEXEC);
    if (connection < 0) return; // EAGAIN: none left (or the socket is closed)
    closeFd(connection);
  }
}
