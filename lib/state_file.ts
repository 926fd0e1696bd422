/**
 * The original C system's state file (`/tmp/data.dat`: the value as `"%d\n\0"` text at offset 0
 * of a 258-byte file) used through pread(2) and pwrite(2) only, never mapped. Mapping a file
 * another process may truncate is how the original's processes die of SIGBUS; reading and
 * writing it this way cannot fault, whatever is done to the file meanwhile.
 *
 * A state cell uses one as its mirror: the writer copies each value into it for programs that
 * read the file (the original C LED), and readers follow it while no cooperating writer is alive
 * (the original C button writes only the file).
 *
 * @module
 */

import * as C from "../ffi/constants.ts";
import * as posix from "../ffi/posix.ts";
import { failure } from "./errors.ts";
import { normalizeShmName } from "./open_region.ts";
import {
  checkDataFile,
  checkOwn,
  checkPrivateDirectory,
  openOrCreate,
  removeIfSame,
  removeShmIfSame,
  type Unnamed,
  unnamedAt,
  unnamedShm,
  withDirectoryMode,
} from "./owned_path.ts";
import { formatState, isStateValue, parseState, STATE_TEXT_BYTES } from "./state_text.ts";

/**
 * The size of the original's state file (part of its format): the original C programs make it
 * with `lseek(256 + 1)` and a one-byte write, and {@link openStateFile} creates and keeps files of
 * this size.
 */
export const STATE_FILE_SIZE = 258;
/** A state file larger than this is not one: it holds something else. */
const MAX_STATE_FILE_SIZE = 4096;

/** Options for {@link openStateFile}. */
export interface StateFileOptions {
  /**
   * Create the file (0600, 258 bytes, value 0) when it does not exist.
   *
   * @default {false}
   */
  create?: boolean;
  /**
   * Open only a file this call creates (`AlreadyExists` otherwise). Needs `create`.
   *
   * @default {false}
   */
  exclusive?: boolean;
  /**
   * Told the identity ({@link StateFile.identity}) of a file this call creates, once it is set up
   * (0600, 258 bytes, value 0) and before it appears at its path: it is made unnamed (O_TMPFILE)
   * and named (linkat(2)) only after this returns. So a process that writes the identity down
   * here, to know the file for its own later, leaves nothing at the path if it dies before that,
   * and a file it wrote down if it dies after. Throwing here leaves nothing at the path and
   * fails the call. If another process puts a file at the path meanwhile, that file is opened
   * instead (`created` is false; with `exclusive`, `AlreadyExists`), after this was called.
   * Where the file system cannot make unnamed files (EOPNOTSUPP, EISDIR, EINVAL), the file is
   * made at its path and this is called right after it is set up: a process that dies in
   * between leaves a file it never wrote down.
   *
   * @example Writing down what was made before it is there
   * ```ts
   * import { openStateFile } from "@mmap-ipc/mmap-ipc";
   *
   * const dir = await Deno.makeTempDir();
   * let made: string | undefined;
   * using file = openStateFile(`${dir}/data.dat`, {
   *   create: true,
   *   // A real program writes it to a file of its own: see the launcher's claim records.
   *   beforeLink: (identity) => made = identity,
   * });
   * console.log(file.created && made === file.identity); // true
   * await Deno.remove(dir, { recursive: true });
   * ```
   */
  beforeLink?: (identity: string) => void;
}

/** What a state file holds, as the original's `sscanf` reads it, and whether it is whole. */
export interface StateFileContent {
  /** The value at offset 0 (0 for an empty or blank file, as the original reads it). */
  value: number;
  /** Bytes in the file. */
  size: number;
  /** Whether no number is there at all (an empty or truncated file). */
  blank: boolean;
}

/**
 * Whether `bytes` (a whole file) look like a state file: empty, all NUL, or a `%d` number
 * (with ASCII white space around it, as `sscanf` takes it) up to the first NUL; anything after
 * that NUL is the leftover of a longer text written there before and ignored. A text file of any other kind is not a state
 * file, nor is one whose first NUL follows no number but is followed by more than NULs (a small
 * binary file, such as an icon or UTF-16 text): every writer of the format (`"%d\n"`) puts a
 * number before its NUL, so nothing of the format's leaves such a file.
 */
export function looksLikeStateFile(bytes: Uint8Array): boolean {
  if (bytes.length > MAX_STATE_FILE_SIZE) return false;
  const end = bytes.indexOf(0);
  // Byte for byte, as sscanf reads it: its white space is ASCII's alone (a non-breaking space or
  // a byte-order mark is text of another kind, which a decoder would turn into \s or drop).
  const text = new TextDecoder("latin1").decode(end < 0 ? bytes : bytes.subarray(0, end));
  const match = /^[ \t\n\v\f\r]*([-+]?[0-9]+[ \t\n\v\f\r]*)?$/.exec(text);
  if (match === null || text.length > STATE_TEXT_BYTES) return false;
  // No number before the first NUL, and more than NULs after it: no writer of the format's.
  return match[1] !== undefined || end < 0 || bytes.subarray(end).every((byte) => byte === 0);
}

/** What {@link openWith} hands to the {@link StateFile} constructor. */
interface StateFileParts {
  path: string;
  fd: number;
  identity: string;
  created: boolean;
}

const constructing = Symbol("StateFile");

/** The state file; see the module description. Open one with {@link openStateFile}. */
export class StateFile {
  readonly #path: string;
  readonly #identity: string;
  readonly #created: boolean;
  readonly #text = new Uint8Array(STATE_TEXT_BYTES);
  readonly #write = new Uint8Array(16);
  #fd: number;

  /**
   * @ignore Not for direct use: call {@link openStateFile}. Guarded, as the region's and the
   * cell's are: a StateFile made around any fd number closed that fd at `close()`, whoever's it
   * was (Deno's own event loop's, which then panicked).
   */
  constructor(token: symbol, parts: unknown) {
    if (token !== constructing) throw new TypeError("Use openStateFile() to open a state file");
    const { path, fd, identity, created } = parts as StateFileParts;
    this.#path = path;
    this.#fd = fd;
    this.#identity = identity;
    this.#created = created;
  }

  /** The path it was opened at. */
  get path(): string {
    return this.#path;
  }

  /** Its inode (device and number), to tell it from a file put at the path later. */
  get identity(): string {
    return this.#identity;
  }

  /** Whether {@link openStateFile} created it. */
  get created(): boolean {
    return this.#created;
  }

  /**
   * Its permission bits now (`mode & 07777`, from fstat(2)): a file other users may write
   * (`mode & 0o022`) lets them change the state.
   */
  get mode(): number {
    this.#check();
    return posix.statFd(this.#fd, this.#path).permissions & 0o7777;
  }

  /** Whether {@link StateFile.close} has run. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /** The open fd, for watching it; it stays this object's. */
  get fd(): number {
    this.#check();
    return this.#fd;
  }

  /** Reads the value now (one pread(2)). */
  value(): number {
    this.#check();
    const count = posix.readAt(this.#fd, this.#text, 0, this.#path);
    this.#text.fill(0, count);
    return parseState(this.#text, 0, STATE_TEXT_BYTES);
  }

  /** Reads the value, the size and whether a number is there at all, now. */
  read(): StateFileContent {
    this.#check();
    const count = posix.readAt(this.#fd, this.#text, 0, this.#path);
    this.#text.fill(0, count);
    const end = this.#text.indexOf(0);
    let blank = true;
    for (let i = 0; i < (end < 0 ? count : end); i++) {
      if (this.#text[i] >= 0x30 && this.#text[i] <= 0x39) blank = false;
    }
    return {
      value: parseState(this.#text, 0, STATE_TEXT_BYTES),
      size: posix.statFd(this.#fd, this.#path).size,
      blank,
    };
  }

  /**
   * Writes `value` as `"%d\n\0"` at offset 0, and puts the file back to the original's 258
   * bytes if something shortened it.
   */
  write(value: number): void {
    this.#check();
    if (!isStateValue(value)) throw new RangeError(`State ${value} is not a 32-bit integer`);
    const length = formatState(this.#write, 0, value);
    posix.writeAt(this.#fd, this.#write, 0, this.#path, length);
    if (posix.statFd(this.#fd, this.#path).size < STATE_FILE_SIZE) {
      posix.truncateFd(this.#fd, STATE_FILE_SIZE, this.#path);
    }
  }

  /** Closes the file; safe to call twice. The file itself stays. */
  close(): void {
    if (this.#fd < 0) return;
    posix.closeFd(this.#fd);
    this.#fd = -1;
  }

  /** Same as {@link StateFile.close}, for `using`. */
  [Symbol.dispose](): void {
    this.close();
  }

  #check(): void {
    if (this.#fd < 0) {
      throw new Deno.errors.BadResource(`The state file ${JSON.stringify(this.#path)} is closed`);
    }
  }
}

const OPEN_FLAGS = C.O_RDWR | C.O_CLOEXEC | C.O_NOCTTY | C.O_NONBLOCK | C.O_NOFOLLOW;

/**
 * Opens the original's state file for reading and writing without mapping it. Created 0600
 * and 258 bytes (value 0); never through a symlink; refused when it belongs to another user,
 * sits in a directory others can write, or holds anything but a state (a text file of notes is
 * never taken for one, and is left exactly as it is).
 *
 * @param path The file, such as the original's `/tmp/data.dat`. Its directory and every directory
 * above it must belong to this user or root, and be writable by no other user unless sticky (as
 * `/tmp` is).
 * @param [options={}] Whether to create it.
 * @example
 * ```ts
 * import { openStateFile } from "@mmap-ipc/mmap-ipc";
 *
 * const dir = await Deno.makeTempDir();
 * using file = openStateFile(`${dir}/data.dat`, { create: true });
 * file.write(1); // what the original C LED reads: "1\n\0"
 * console.log(file.read().value); // 1
 * await Deno.remove(dir, { recursive: true }); // the file stays open until `file` closes
 * ```
 */
export function openStateFile(path: string, options: StateFileOptions = {}): StateFile {
  options ??= {}; // null from JavaScript
  const action = "open state file";
  if (options.exclusive && !options.create) {
    throw failure(TypeError, action, path, "exclusive needs create");
  }
  checkPrivateDirectory(path, action);
  const open = (extra: number): number => {
    try {
      return posix.openPath(path, OPEN_FLAGS | extra, 0o600, action);
    } catch (error) {
      // Only a creation is refused by the directory's mode.
      throw (extra & C.O_CREAT) === 0 ? error : withDirectoryMode(error, path);
    }
  };
  return openWith(
    path,
    options,
    {
      open,
      unnamed: unnamedAt(path, action),
      remove: (fd) => removeIfSame(path, posix.statFd(fd, path).identity, "remove state file"),
    },
    action,
  );
}

/**
 * Opens a state kept as text in POSIX shared memory (`/dev/shm/NAME`), used the same way as
 * {@link openStateFile}: through pread(2) and pwrite(2), never mapped.
 */
export function openStateShm(name: string, options: StateFileOptions = {}): StateFile {
  options ??= {}; // null from JavaScript
  const shmName = normalizeShmName(name);
  if (options.exclusive && !options.create) {
    throw failure(TypeError, "open shared memory", shmName, "exclusive needs create");
  }
  const action = "open shared memory";
  return openWith(
    shmName,
    options,
    {
      open: (extra) => posix.shmOpen(shmName, C.O_RDWR | C.O_NOFOLLOW | C.O_CLOEXEC | extra, 0o600),
      unnamed: unnamedShm(shmName, action),
      remove: (fd) => removeShmIfSame(shmName, posix.statFd(fd, shmName).identity),
    },
    action,
  );
}

/**
 * Opens the state file another process of ours holds open, through `/proc/PID/fd/N`: the very
 * inode that process uses, whatever has happened to its path since. `name` is its path or shm
 * name, for messages.
 */
export function openStateFileAt(procPath: string, name: string): StateFile {
  if (!/^\/proc\/(\d+|self)\/fd\/\d+$/.test(procPath)) {
    throw new TypeError(`Invalid path ${JSON.stringify(procPath)}: expected /proc/PID/fd/N`);
  }
  // /proc/PID/fd/N is a symlink by design: following it is the point.
  const open = (): number => {
    try {
      return posix.openPath(procPath, C.O_RDWR | C.O_CLOEXEC | C.O_NOCTTY, 0, "open state file");
    } catch (error) {
      // Named as the user knows it; opening through /proc checks its mode again (chmod).
      if (error instanceof Error) {
        error.message = error.message.replace(
          JSON.stringify(procPath),
          `${JSON.stringify(name)} (through ${procPath})`,
        );
      }
      throw error;
    }
  };
  return openWith(name, {}, { open, remove: () => {} }, "open state file");
}

/** How {@link openWith} opens one kind of state file: see `openOrCreate()` in owned_path.ts. */
interface Opening {
  /** Opens the file at its path with `flags` added. */
  open: (flags: number) => number;
  /** Makes it unnamed and names it, where it can be made so. */
  unnamed?: Unnamed;
  /** Removes what was made (open as `fd`) from the path, while the path still names it. */
  remove: (fd: number) => void;
}

/**
 * Opens through `how`, creating when asked (set up as the original makes it: 258 bytes, value
 * 0), then checks the inode; `action` is what a failure says was tried (a shm name is no state
 * file's path).
 */
function openWith(
  name: string,
  options: StateFileOptions,
  how: Opening,
  action: string,
): StateFile {
  const { beforeLink } = options;
  const { fd, created } = openOrCreate(how.open, {
    create: options.create,
    exclusive: options.exclusive,
    name,
    unnamed: how.unnamed,
    setUp: (fd) => setUpState(fd, name),
    beforeLink: beforeLink && ((fd) => beforeLink(posix.statFd(fd, name).identity)),
    remove: how.remove,
  });
  try {
    const stat = posix.statFd(fd, name);
    checkOwn(stat, "file", action, name);
    checkDataFile(fd, action, name);
    if (!created) {
      // Read whatever the size says: a file whose size reads 0 may hold text all the same.
      const bytes = new Uint8Array(MAX_STATE_FILE_SIZE + 1);
      const count = posix.readAt(fd, bytes, 0, name);
      if (!looksLikeStateFile(bytes.subarray(0, count))) {
        throw failure(
          Deno.errors.InvalidData,
          action,
          name,
          `it holds something other than a state ("%d\\n" text, as the original writes); it is left as it is`,
        );
      }
    }
    return new StateFile(constructing, { path: name, fd, identity: stat.identity, created });
  } catch (error) {
    try {
      if (created) how.remove(fd);
    } finally {
      posix.closeFd(fd);
    }
    throw error;
  }
}

/** Makes the new file open as `fd` what the original makes: 258 bytes, value 0 as text. */
function setUpState(fd: number, name: string): void {
  posix.truncateFd(fd, STATE_FILE_SIZE, name);
  const text = new Uint8Array(STATE_TEXT_BYTES);
  posix.writeAt(fd, text, 0, name, formatState(text, 0, 0));
}
