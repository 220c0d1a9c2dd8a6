/**
 * One stream on a work connection, the same on both sides: `near` is the socket
 * this side serves (the user's on the server, the local app's on the client),
 * `work` the work connection between the two hosts.
 *
 * Each direction ends by a byte count told on the control connection (StreamEnd),
 * never by a FIN on the work connection (README, "How a stream ends"):
 * - near -> work: near's FIN is told as StreamEnd(seq, bytes relayed); when it can no
 *   longer be told (the control connection is gone), the stream is reset;
 * - work -> near: once the count the other side told has been relayed, near gets a FIN.
 * When both have ended, the work connection is parted from near, and the owner (the
 * server's pool or the client's work connections) decides what becomes of it.
 */
import { log } from "../log.ts";
import type { Endpoint, StreamEnds } from "./endpoint.ts";

/** What one side does around its streams. */
export interface StreamOwner {
  /** What near is, in log lines: "user" or "app". */
  readonly nearName: string;
  /** Fields that name the stream in log lines (group, app). */
  fields(stream: Stream): Record<string, unknown>;
  /** Tells the other side that near's direction ended after `bytes`; false when it cannot be told. */
  tellEnd(stream: Stream, bytes: number): boolean;
  /** Both directions have ended and the work connection has been parted from near. */
  finished(stream: Stream): void;
}

/** Ends of the stream's directions, called by the relay (`onEnd`): one function each for every stream. */
const nearEnded = (near: Endpoint) => near.stream!.nearEnded();
const workEnded = (work: Endpoint) => work.stream!.workEnded();

/** A stream between `near` and `work`. */
export class Stream implements StreamEnds {
  /** near's FIN has been told to the other side. */
  outEnded = false;
  /** Every byte the other side announced has arrived, and near was sent a FIN. */
  inEnded = false;
  /** The control connection is gone: an end not told by then cannot be told (the stream is reset), and the work connection closes after it. */
  noReuse = false;

  constructor(
    readonly owner: StreamOwner,
    readonly work: Endpoint,
    readonly near: Endpoint,
    /** The work connection's sequence number: how StreamEnd and WorkFree name it. */
    readonly seq: number,
    readonly app: string,
  ) {
    work.stream = this;
    near.stream = this;
    near.onEnd = nearEnded;
  }

  /** Whether both directions have ended. */
  get done(): boolean {
    return this.outEnded && this.inEnded;
  }

  /** From now on a FIN of near or the count reached on work ends a direction (work's bytes flow to near once piped). */
  watchWork(): void {
    this.work.onEnd = workEnded;
  }

  /** near sent FIN: tell the other side how many bytes to expect. */
  nearEnded(): void {
    if (this.outEnded) return;
    this.outEnded = true;
    // Without the control connection the count cannot be told, and a FIN would prove nothing.
    if (this.noReuse) return this.cut(`the ${this.owner.nearName}'s end came after the control connection was lost`);
    this.work.release(); // a frame held for near's first bytes (StartWork, WorkAck): none will come
    if (!this.owner.tellEnd(this, this.near.relayed)) {
      this.noReuse = true;
      return this.cut(`the ${this.owner.nearName}'s end came after the control connection was lost`);
    }
    if (this.inEnded) this.#finish();
  }

  /** Every byte the other side announced has arrived: near gets a FIN. */
  workEnded(): void {
    if (this.inEnded) return;
    this.inEnded = true;
    if (this.outEnded) this.#finish();
    else this.near.shutdownWhenFlushed();
  }

  /** The other side's StreamEnd: its direction ends after `bytes` relayed on work. False (and the stream reset) when more have come already. */
  endAfter(bytes: number): boolean {
    if (this.work.endAfter(bytes)) return true;
    this.broken("more bytes than its stream-end announced");
    return false;
  }

  #finish(): void {
    // Parted first: near may close at once, and must not take the work connection with it.
    this.work.unpipe();
    this.work.stream = null;
    // near closes once its last bytes are taken; one that stops reading is cut after LINGER_MS.
    this.near.endWhenFlushed();
    this.owner.finished(this);
  }

  /** The other side broke the protocol: both ends are reset. */
  broken(why: string): void {
    log.warn("protocol error on a work connection; resetting the stream", { ...this.owner.fields(this), error: why });
    this.reset();
  }

  /** Resets a stream whose end cannot be proven: near sees a reset, never a clean end after fewer bytes. */
  cut(why: string): void {
    log.warn("stream reset: its end cannot be confirmed", { ...this.owner.fields(this), reason: why });
    this.reset();
  }

  /** Resets both ends. */
  reset(): void {
    this.near.reset();
    this.work.reset();
  }
}
