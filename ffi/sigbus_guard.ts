/**
 * Survives another process shrinking a file we have mapped (`truncate`, `ftruncate`, `echo >`):
 * touching a page past the file's new end raises SIGBUS, which kills the process. A small
 * SIGBUS handler, installed with the first guarded mapping, puts a private zero-filled page in
 * place of a faulting page that lies in a guarded range, and returns, so the access completes on
 * that page (reads see zeros; writes stay in this process). Only that page: a SIGBUS may also
 * come from a page the kernel could not fill (a hole punched in a full tmpfs, an I/O error),
 * where the pages around it still reach the file. Each page replaced splits the mapping, and a
 * reader touching every other page of a large shrunk range would reach the kernel's limit on
 * mappings (`vm.max_map_count`), where V8's own mmap fails too: after the process's first 1,024
 * faults (or when the one-page mmap fails), the handler replaces the faulting page and every page
 * of the range above it in one mapping instead, as a shrink cut them all off. A fault anywhere else goes to the handler
 * installed before it (Rust's, which reports a stack overflow or lets the process die as it
 * would have).
 *
 * No JavaScript can run in a signal handler, so the handler is machine code: the 230-odd bytes
 * below, assembled from the listings beside them (GNU as, and `aarch64-linux-gnu-as` for
 * aarch64; `objcopy -O binary -j .text`), copied
 * into a page that is then made read-only and executable. It reads a table in a page of its
 * own: the ranges, a count of the faults it took in, the previous handler and the page size.
 *
 * @module
 */

import * as C from "./constants.ts";
import { libc } from "./libc.ts";

// x86-64 (Intel syntax). void handler(int sig, siginfo_t *info, void *context):
//         mov  rcx, [rip + table]      # the table's address (the literal after the code)
//         mov  rax, [rsi + 16]         # si_addr
//         mov  r8, [rcx]               # ranges in use
//         lea  r9, [rcx + 64]
// 1:      test r8, r8
//         jz   3f
//         cmp  rax, [r9]
//         jb   2f
//         cmp  rax, [r9 + 8]
//         jae  2f
//         inc  qword ptr [rcx + 8]     # ours: count it, and put a private zero page in place
//         mov  rsi, [rcx + 24]         # length: the page size
//         mov  rdi, rsi
//         neg  rdi
//         and  rdi, rax                # the faulting page
//         mov  rdx, [r9 + 24]          # the range's tail replaced whole (its end while none)
//         cmp  rdi, rdx
//         jae  6f                      # in it: another thread's fault got there first; retry
//         cmp  qword ptr [rcx + 8], 1024
//         ja   7f                      # past the first 1024 faults: the tail at once (below)
//         push r9                      # (syscall takes r9 and clobbers rcx and r11)
//         push rdx
//         push rdi
//         mov  edx, 3                  # PROT_READ | PROT_WRITE
//         mov  r10d, 0x32              # MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS
//         mov  r8, -1
//         xor  r9d, r9d
//         mov  eax, 9                  # mmap
//         syscall
//         pop  rdi
//         pop  rdx
//         pop  r9
//         cmp  rax, -4096
//         ja   7f                      # failed (ENOMEM: the limit reached all the same)
//         inc  qword ptr [r9 + 16]     # one page more replaced
// 6:      ret
// 7:      mov  rsi, rdx                # this page and all above it to the tail, in one mapping:
//         sub  rsi, rdi                # each page replaced alone splits the mapping, and at the
//         mov  [r9 + 24], rdi          # kernel's limit on mappings every mmap in the process fails
//         mov  edx, 3
//         mov  r10d, 0x4032            # ... | MAP_NORESERVE: a tail of gigabytes is no commitment
//         mov  r8, -1
//         xor  r9d, r9d
//         mov  eax, 9
//         syscall
//         cmp  rax, -4096
//         ja   4f                      # failed again: the default action, as if unguarded
//         ret
// 2:      add  r9, 32
//         dec  r8
//         jmp  1b
// 3:      mov  rax, [rcx + 16]         # not ours: the previous handler, same arguments
//         cmp  rax, 1
//         jbe  4f                      # SIG_DFL or SIG_IGN
//         jmp  rax
// 4:      mov  rcx, [rip + table]      # (syscall clobbers rcx)
//         mov  edi, 7                  # SIGBUS back to SIG_DFL: the fault repeats and kills
//         lea  rsi, [rcx + 32]         # a zeroed kernel struct sigaction
//         xor  edx, edx
//         mov  r10d, 8
//         mov  eax, 13                 # rt_sigaction
//         syscall
//         ret
//         .balign 8
// table:  .quad 0
const X86_64 = "488b0de9000000488b46104c8b014c8d49404d85c00f84a3000000493b010f828e000000493b4108" +
  "0f838400000048ff4108488b71184889f748f7df4821c7498b51184839d7733a4881790800040000" +
  "773141515257ba0300000041ba3200000049c7c0ffffffff4531c9b8090000000f055f5a4159483d" +
  "00f0ffff770549ff4110c34889d64829fe49897918ba0300000041ba3240000049c7c0ffffffff45" +
  "31c9b8090000000f05483d00f0ffff7719c34983c12049ffc8e954ffffff488b41104883f8017602" +
  "ffe0488b0d1f000000bf07000000488d712031d241ba08000000b80d0000000f05c3660f1f440000" +
  "0000000000000000";

// aarch64, the same steps (a system call keeps every register but x0):
//         ldr  x9, table
//         ldr  x10, [x1, #16]
//         ldr  x11, [x9]
//         add  x12, x9, #64
// 1:      cbz  x11, 3f
//         ldp  x13, x14, [x12]
//         cmp  x10, x13
//         b.lo 2f
//         cmp  x10, x14
//         b.hs 2f
//         ldr  x13, [x9, #8]
//         add  x13, x13, #1
//         str  x13, [x9, #8]
//         ldr  x1, [x9, #24]
//         neg  x0, x1
//         and  x0, x0, x10
//         ldr  x14, [x12, #24]
//         cmp  x0, x14
//         b.hs 6f
//         mov  x15, x0
//         cmp  x13, #1024
//         b.hi 7f
//         mov  x2, #3
//         mov  x3, #0x32
//         mov  x4, #-1
//         mov  x5, #0
//         mov  x8, #222                // mmap
//         svc  #0
//         cmn  x0, #4095
//         b.hs 7f                      // -4095..-1: failed
//         ldr  x13, [x12, #16]
//         add  x13, x13, #1
//         str  x13, [x12, #16]
// 6:      ret
// 7:      mov  x0, x15
//         sub  x1, x14, x15
//         str  x15, [x12, #24]
//         mov  x2, #3
//         mov  x3, #0x4032
//         mov  x4, #-1
//         mov  x5, #0
//         mov  x8, #222
//         svc  #0
//         cmn  x0, #4095
//         b.hs 4f
//         ret
// 2:      add  x12, x12, #32
//         sub  x11, x11, #1
//         b    1b
// 3:      ldr  x13, [x9, #16]
//         cmp  x13, #1
//         b.ls 4f
//         br   x13
// 4:      ldr  x9, table
//         mov  x0, #7
//         add  x1, x9, #32
//         mov  x2, #0
//         mov  x3, #8
//         mov  x8, #134                // rt_sigaction
//         svc  #0
//         ret
//         .balign 8                    # (a nop)
// table:  .quad 0
const AARCH64 = "c90700582a0840f92b0140f92c010191ab0500b48d3940a95f010debe30400545f010eeba2040054" +
  "2d0540f9ad0500912d0500f9210d40f9e00301cb00000a8a8e0d40f91f000eebe2010054ef0300aa" +
  "bf0110f1a8010054620080d2430680d204008092050080d2c81b80d2010000d41ffc3fb1a2000054" +
  "8d0940f9ad0500918d0900f9c0035fd6e0030faac1010fcb8f0d00f9620080d2430688d204008092" +
  "050080d2c81b80d2010000d41ffc3fb122010054c0035fd68c8100916b0500d1d4ffff172d0940f9" +
  "bf0500f149000054a0011fd629010058e00080d221810091020080d2030180d2c81080d2010000d4" +
  "c0035fd61f2003d50000000000000000";

/** The code per architecture, with the offset of the literal that holds the table's address. */
const HANDLERS = {
  x86_64: { code: X86_64, table: 0xf0 },
  aarch64: { code: AARCH64, table: 0xf8 },
} as const;

// The table, in 64-bit words.
const COUNT = 0;
const FAULTS = 1;
const PREVIOUS = 2;
const PAGE_SIZE = 3;
/** Words 4-7: a zeroed kernel struct sigaction, which is SIG_DFL with no flags. */
const RANGES = 8;
/**
 * Words per range: start, end, how many of its pages were replaced one by one, and where its tail
 * replaced whole begins (the end while none; see the listing's `7:`).
 */
const RANGE_WORDS = 4;
/**
 * The table's size: room for 49,150 ranges, three quarters of the mappings the kernel lets a
 * process have by default (`vm.max_map_count`). Only the pages the ranges in use reach are ever
 * touched.
 */
const TABLE_BYTES = 3 << 19;

const SIGBUS = 7;
const SA_SIGINFO = 4;
const SA_ONSTACK = 0x0800_0000;
/** glibc's struct sigaction, the same on x86-64 and aarch64: handler, mask[128], flags, restorer. */
const SIGACTION_BYTES = 152;
const SIGACTION_FLAGS = 136;

interface Installed {
  /** The table as 64-bit words. */
  table: BigUint64Array;
  /** The low half of the fault count (little-endian on both): a load with no BigInt made. */
  faults: Int32Array;
  /** How many ranges fit. */
  capacity: number;
  /** Free range slots below the count. */
  free: number[];
}

let installed: Installed | null | undefined;

function map(bytes: number, protection: number): Deno.PointerObject | null {
  const pointer = libc().mmap(
    null,
    BigInt(bytes),
    protection,
    C.MAP_PRIVATE | C.MAP_ANONYMOUS,
    -1,
    0n,
  );
  return pointer === null || Deno.UnsafePointer.value(pointer) === C.MAP_FAILED ? null : pointer;
}

/**
 * Installs the handler; null where it cannot be (then mappings are simply unguarded). `between`
 * runs between reading the handler in place and replacing it, for a test of another isolate
 * installing its own meanwhile.
 */
function install(between?: () => void): Installed | null {
  const arch = Deno.build.arch as string;
  if (arch !== "x86_64" && arch !== "aarch64") return null;
  const { code, table: literal } = HANDLERS[arch];
  const pageSize = libc().getpagesize();
  const tableBytes = Math.max(pageSize, TABLE_BYTES);
  const tablePointer = map(tableBytes, C.PROT_READ | C.PROT_WRITE);
  const codePointer = map(pageSize, C.PROT_READ | C.PROT_WRITE);
  if (tablePointer === null || codePointer === null) return null;
  const table = new BigUint64Array(Deno.UnsafePointerView.getArrayBuffer(tablePointer, tableBytes));
  table[PAGE_SIZE] = BigInt(pageSize);
  const bytes = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(codePointer, pageSize));
  for (let i = 0; i < code.length / 2; i++) bytes[i] = parseInt(code.slice(i * 2, i * 2 + 2), 16);
  new DataView(bytes.buffer).setBigUint64(literal, Deno.UnsafePointer.value(tablePointer), true);
  // Never writable and executable at once. (On arm64 the kernel makes the instruction cache
  // agree with the page when it maps it executable.)
  if (libc().mprotect(codePointer, BigInt(pageSize), C.PROT_READ | C.PROT_EXEC) !== 0) {
    return null;
  }
  const action = new Uint8Array(SIGACTION_BYTES);
  const fields = new DataView(action.buffer);
  fields.setBigUint64(0, Deno.UnsafePointer.value(codePointer), true);
  fields.setInt32(SIGACTION_FLAGS, SA_SIGINFO | SA_ONSTACK, true);
  const previous = new Uint8Array(SIGACTION_BYTES);
  // The previous handler first, so that a fault between the two steps still finds it.
  if (libc().sigaction(SIGBUS, null, previous) !== 0) return null;
  table[PREVIOUS] = new DataView(previous.buffer).getBigUint64(0, true);
  between?.();
  // The handler this one replaces, read in the same step: each isolate (a Worker) installs its
  // own, and one that did between the two steps was left out of the chain for good, its ranges'
  // faults reaching no guard (8 Workers mapping their first regions at once, 1 run in 40).
  if (libc().sigaction(SIGBUS, action, previous) !== 0) return null;
  table[PREVIOUS] = new DataView(previous.buffer).getBigUint64(0, true);
  return {
    table,
    faults: new Int32Array(table.buffer, FAULTS * 8, 1),
    capacity: Math.floor((tableBytes / 8 - RANGES) / RANGE_WORDS),
    free: [],
  };
}

/** The guard of one range; see {@link guardRange}. */
export interface RangeGuard {
  /**
   * How many of the range's pages a shrunk file cost so far (each replaced when touched; at the
   * kernel's limit on mappings, the rest of the range at once).
   */
  lostPages(): number;
  /** Ends the guard; call it before the range is unmapped. Safe to call twice. */
  end(): void;
}

/** The guard of every range where the handler could not be installed: none. */
const UNGUARDED: RangeGuard = { lostPages: () => 0, end: () => {} };

/**
 * Guards `length` bytes from `address`: a page of them that faults because its file shrank
 * becomes a private zero-filled page instead of killing the process. Where the handler cannot
 * be installed the range stays unguarded; when all its slots are taken, returns null: the caller
 * must not keep the range mapped, since nothing would then catch its faults.
 */
export function guardRange(address: bigint, length: number): RangeGuard | null {
  installed ??= install();
  const guard = installed;
  if (guard === null) return UNGUARDED;
  const { table } = guard;
  let slot = guard.free.pop();
  if (slot === undefined) {
    slot = Number(table[COUNT]);
    if (slot >= guard.capacity) return null;
  }
  const at = RANGES + slot * RANGE_WORDS;
  // Start first, then the end: a range with an end of 0 matches nothing while it is made.
  const end = address + BigInt(length);
  table[at + 1] = 0n;
  table[at + 2] = 0n;
  table[at + 3] = end;
  table[at] = address;
  table[at + 1] = end;
  if (slot >= Number(table[COUNT])) table[COUNT] = BigInt(slot + 1);
  const pages = (): number => {
    const pageSize = table[PAGE_SIZE];
    const tail = Number((end - table[at + 3] + pageSize - 1n) / pageSize);
    // A page replaced alone and then again with the tail counts twice, but never more than all.
    return Math.min(Number(table[at + 2]) + tail, Math.ceil(length / Number(pageSize)));
  };
  let lost: number | undefined;
  return {
    lostPages: () => lost ?? pages(),
    end: () => {
      if (lost !== undefined) return;
      lost = pages();
      table[at + 1] = 0n;
      table[at] = 0n;
      guard.free.push(slot);
    },
  };
}

/** What {@link guardedFaultWord} gives where no guard is installed: never moves. */
const NO_FAULTS = new Int32Array(1);

/**
 * The low half of the guard's fault count, as a word to keep and load (0 until a page was
 * replaced): for the paths that look on every call, a field and an element load. Ask it after the
 * first mapping (which installs the guard).
 */
export function guardedFaultWord(): Int32Array {
  return installed ? installed.faults : NO_FAULTS;
}

/** Whether the guard has replaced any page in this process so far. */
export function anyGuardedFault(): boolean {
  return installed ? installed.faults[0] !== 0 : false;
}

/** How many faults the guard has taken in, in this process so far. */
export function guardedFaults(): number {
  return installed ? Number(installed.table[FAULTS]) : 0;
}

/** How many ranges are guarded now (for tests: a range let go must give its slot back). */
export function guardedRanges(): number {
  return installed ? Number(installed.table[COUNT]) - installed.free.length : 0;
}

/**
 * @internal Installs the guard now, running `between` in the middle of it (see `install`), for
 * tests. Returns whether it was installed by this call.
 */
export function installGuardWith(between: () => void): boolean {
  if (installed !== undefined) return false;
  installed = install(between);
  return installed !== null;
}

/** How many ranges the guard can hold at once. */
export function guardCapacity(): number {
  return installed ? installed.capacity : 0;
}
