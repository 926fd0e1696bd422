/**
 * Messages over a Unix socket with a real 4-byte length prefix per message, so a socket is
 * compared with the ring message for message: the sender writes each frame as it is sent (one
 * write per message, from a reused buffer), the receiver parses frames out of what it reads and
 * copies each message into the caller's buffer.
 *
 * @module
 */

const READ_BUFFER_BYTES = 256 * 1024;

/** The sending end. */
export class FramedSender {
  readonly #connection: Deno.UnixConn;
  #frame: Uint8Array<ArrayBuffer> = new Uint8Array(4);
  #frameView = new DataView(this.#frame.buffer);

  /** Sends on `connection`. */
  constructor(connection: Deno.UnixConn) {
    this.#connection = connection;
  }

  /** Connects to the receiver listening at `path`. */
  static async connect(path: string): Promise<FramedSender> {
    return new FramedSender(await Deno.connect({ transport: "unix", path }));
  }

  /** Writes `message` with its length prefix. */
  async send(message: Uint8Array): Promise<void> {
    if (this.#frame.length < message.length + 4) {
      this.#frame = new Uint8Array(message.length + 4);
      this.#frameView = new DataView(this.#frame.buffer);
    }
    this.#frameView.setUint32(0, message.length, true);
    this.#frame.set(message, 4);
    const frame = this.#frame.subarray(0, message.length + 4);
    for (let written = 0; written < frame.length;) {
      written += await this.#connection.write(frame.subarray(written));
    }
  }

  /** Closes the connection; safe twice. */
  close(): void {
    try {
      this.#connection.close();
    } catch {
      // already closed
    }
  }
}

/** The receiving end. */
export class FramedReceiver {
  readonly #connection: Deno.UnixConn;
  readonly #buffer = new Uint8Array(READ_BUFFER_BYTES);
  readonly #view = new DataView(this.#buffer.buffer);
  #start = 0;
  #end = 0;

  /** Receives from `connection`. */
  constructor(connection: Deno.UnixConn) {
    this.#connection = connection;
  }

  /** The next message from what was already read into `buffer`; -1 when none is complete. */
  tryReceiveInto(buffer: Uint8Array): number {
    if (this.#end - this.#start < 4) return -1;
    const length = this.#view.getUint32(this.#start, true);
    if (this.#end - this.#start < 4 + length) return -1;
    if (length > buffer.length) {
      throw new RangeError(`A ${length}-byte message does not fit a ${buffer.length}-byte buffer`);
    }
    buffer.set(this.#buffer.subarray(this.#start + 4, this.#start + 4 + length));
    this.#start += 4 + length;
    return length;
  }

  /** The next message, reading from the socket as needed; throws at end of stream. */
  async receiveInto(buffer: Uint8Array): Promise<number> {
    for (;;) {
      const length = this.tryReceiveInto(buffer);
      if (length >= 0) return length;
      if (this.#start > 0) {
        this.#buffer.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      if (this.#end === this.#buffer.length) {
        throw new RangeError(`A frame is larger than the ${READ_BUFFER_BYTES}-byte read buffer`);
      }
      const read = await this.#connection.read(this.#buffer.subarray(this.#end));
      if (read === null) throw new Deno.errors.UnexpectedEof("The sender closed the socket");
      this.#end += read;
    }
  }

  /** Closes the connection; safe twice. */
  close(): void {
    try {
      this.#connection.close();
    } catch {
      // already closed
    }
  }
}
