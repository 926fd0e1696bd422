/**
 * Names in Linux's abstract Unix socket namespace, one per machine (per network namespace)
 * and shared by every user: a listening socket bound to a name holds it, a second bind fails
 * with EADDRINUSE, and the name is gone with the socket, so a process that dies (SIGKILL
 * included) leaves nothing to clean up. A connect to a held name tells who holds it
 * (SO_PEERCRED); the holder reads nothing, and drops each connection it is handed
 * ({@link dropConnections}), so its queue never fills, having written what it is there (its
 * role, one short line), which the asker waits a moment for: a process that squats the name
 * says nothing, and is named by its pid, user and command name instead.
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
/** `struct pollfd { int fd; short events; short revents; }` */
const POLLFD_BYTES = 8;
/**
 * How long an asker waits for the holder's role line by default: a holder drops connections
 * from its event loop, which a busy process may take a while to get back to. Bounded, so a
 * holder that never answers (a squatter) costs a refusal this much and no more.
 */
export const ROLE_WAIT_MS = 500;
/** The longest role line read: anything longer is not one of ours. */
const ROLE_BYTES = 64;
/** What a role may be: printable ASCII, no spaces at its ends, so a message can quote it. */
const ROLE = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;

/**
 * Who holds an abstract name: the holder's pid in this pid namespace (0 if not in it), uid, and
 * the role it said it has there (see {@link dropConnections}), if it said one.
 */
export interface NameHolder {
  pid: number;
  uid: number;
  role?: string;
}

/** Options for {@link abstractNameHolder}. */
export interface NameHolderOptions {
  /** How long to wait for the holder to say its role; default {@link ROLE_WAIT_MS}. */
  roleWaitMs?: number;
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
 * holder whose queue is full). Waits up to `roleWaitMs` for the holder's role line, blocking
 * this thread; not at all when the holder is this very process, whose event loop the wait would
 * hold up (its caller knows what it holds).
 */
export function abstractNameHolder(
  name: string,
  options: NameHolderOptions = {},
): NameHolder | undefined {
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
    const holder: NameHolder = { pid: view.getInt32(0, true), uid: view.getUint32(4, true) };
    const waitMs = holder.pid === Deno.pid ? 0 : options.roleWaitMs ?? ROLE_WAIT_MS;
    const role = readRole(fd, waitMs);
    if (role !== undefined) holder.role = role;
    return holder;
  } finally {
    closeFd(fd);
  }
}

/**
 * The role line the holder at the other end of the connected socket `fd` writes, waiting up to
 * `waitMs` for it; undefined when it writes none (closes at once, or never answers) or one
 * that is not a role.
 */
function readRole(fd: number, waitMs: number): string | undefined {
  const bytes = new Uint8Array(ROLE_BYTES + 1);
  let length = 0;
  const deadline = performance.now() + waitMs;
  for (;;) {
    const pollfd = new Uint8Array(POLLFD_BYTES);
    const view = new DataView(pollfd.buffer);
    view.setInt32(0, fd, true);
    view.setInt16(4, C.POLLIN, true);
    const left = Math.max(0, Math.ceil(deadline - performance.now()));
    const ready = libc().poll(pollfd, 1n, left);
    // EINTR: try again while time is left; nothing ready in time: the holder says nothing.
    if (ready < 0 && performance.now() < deadline) continue;
    if (ready <= 0) return undefined;
    const got = Number(libc().read(fd, bytes.subarray(length), BigInt(bytes.length - length)));
    if (got < 0 && performance.now() < deadline) continue; // EAGAIN or EINTR
    if (got <= 0) break; // closed (or failed): what came is all there is
    length += got;
    if (bytes.subarray(0, length).includes(0x0a) || length >= bytes.length) break;
  }
  const line = new TextDecoder().decode(bytes.subarray(0, length)).split("\n")[0];
  return line.length <= ROLE_BYTES && ROLE.test(line) ? line : undefined;
}

/** Whether `role` can be said by {@link dropConnections}: 1 to 64 printable ASCII characters. */
export function isRole(role: string): boolean {
  return role.length <= ROLE_BYTES && ROLE.test(role);
}

/**
 * Accepts and closes every connection queued on the held name's socket `fd` (each one only
 * asked who holds it), so that the queue never fills and later askers are told too; first
 * writes `role` and a newline to each, when given, for {@link abstractNameHolder} to read.
 * Throws a TypeError for a role that is not 1 to 64 printable ASCII characters.
 */
export function dropConnections(fd: number, role?: string): void {
  if (role !== undefined && !isRole(role)) {
    throw new TypeError(`Role ${JSON.stringify(role)} is not 1 to ${ROLE_BYTES} printable ASCII`);
  }
  const line = role === undefined ? undefined : encoder.encode(`${role}\n`);
  for (;;) {
    // Nonblocking: a write to a fresh connection fits its buffer, and never waits on an asker.
    const connection = libc().accept4(fd, null, null, C.SOCK_CLOEXEC | C.SOCK_NONBLOCK);
    if (connection < 0) return; // EAGAIN: none left (or the socket is closed)
    // An asker that gave up already: EPIPE or ECONNRESET (Deno ignores SIGPIPE), nothing to tell.
    if (line !== undefined) libc().write(connection, line, BigInt(line.length));
    closeFd(connection);
  }
}
