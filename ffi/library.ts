/**
 * Opens a shared library the way that costs least memory: its synchronous functions are called
 * through Deno's generic FFI path (`Deno.UnsafeFnPointer`, libffi underneath), its nonblocking
 * ones as `Deno.dlopen` makes them.
 *
 * `Deno.dlopen` compiles a fast-call trampoline for every synchronous function with Cranelift.
 * The first one brings about 3 MiB of the Deno binary's compiler code into the process's resident
 * memory, for the rest of its life, and each further one about 13 KiB; a process of this project
 * grew by a tenth for it. A generic call costs about 0.7 us more than a fast one: nothing for an
 * open, a read or a wake-up made now and then. What is called often enough for that to matter
 * asks for the fast calls by name (see `fastLibc()` in `libc.ts`).
 *
 * @module
 */

/** A library opened by {@link openLibrary}. */
export interface OpenLibrary<S extends Deno.ForeignLibraryInterface> {
  /** The functions, typed as `Deno.dlopen` types them; an optional one missing is `null`. */
  readonly symbols: Deno.DynamicLibrary<S>["symbols"];
  /** Closes the library: no symbol may be called afterwards. */
  close(): void;
}

/**
 * Opens `path` with `symbols` (functions only), each synchronous one bound to its address for a
 * generic call. Throws what `Deno.dlopen` throws: the library or a required symbol not found.
 *
 * @example Calling getpid(2) without Cranelift
 * ```ts
 * import { openLibrary } from "./library.ts";
 *
 * const libc = openLibrary("libc.so.6", { getpid: { parameters: [], result: "i32" } });
 * if (libc.symbols.getpid() !== Deno.pid) throw new Error("not this process");
 * libc.close();
 * ```
 */
export function openLibrary<const S extends Deno.ForeignLibraryInterface>(
  path: string,
  symbols: S,
): OpenLibrary<S> {
  // One dlopen: each synchronous function as a static of pointer type (its address, nothing
  // compiled), each nonblocking one as itself, under the same keys.
  const plan: Record<string, Deno.ForeignFunction | Deno.ForeignStatic> = {};
  for (const [key, entry] of Object.entries(symbols)) {
    const definition = entry as Deno.ForeignFunction;
    plan[key] = definition.nonblocking ? definition : {
      name: typeof definition.name === "string" ? definition.name : key,
      type: "pointer",
      optional: definition.optional,
    };
  }
  const library = Deno.dlopen(path, plan);
  const opened = library.symbols as Record<string, unknown>;
  const bound: Record<string, unknown> = {};
  for (const [key, entry] of Object.entries(symbols)) {
    const definition = entry as Deno.ForeignFunction;
    const found = opened[key];
    if (definition.nonblocking || found === null) bound[key] = found;
    else {
      const pointer = new Deno.UnsafeFnPointer(
        found as Deno.PointerObject<typeof definition>,
        definition,
      );
      bound[key] = pointer.call.bind(pointer);
    }
  }
  return {
    symbols: bound as Deno.DynamicLibrary<S>["symbols"],
    close: () => library.close(),
  };
}
