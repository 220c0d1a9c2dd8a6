/**
 * Frames held back to leave in one write with the next relayed chunk: a frame
 * that introduces a stream (StartWork, WorkAck, StreamEnd) costs no packet of its own.
 */
import type { Endpoint } from "./endpoint.ts";

// Endpoints whose held header waits for the event loop's next poll: a user who
// writes right after connecting has its first bytes read by then, and they leave
// with the header. setImmediate runs before the poll, so a header is released on
// the second turn after it was held: at most one loop turn of delay for a user who
// waits for the app to speak first.
let heldNew: Endpoint[] = [];
let heldOld: Endpoint[] = [];
let releaseScheduled = false;

function releaseTurn(): void {
  for (const ep of heldOld) ep.release();
  heldOld = heldNew;
  heldNew = [];
  if (heldOld.length) setImmediate(releaseTurn);
  else releaseScheduled = false;
}

/** Holds `header` on `ep` until its next relayed chunk or, at the latest, the event loop's next poll has passed. */
export function holdUntilNextPoll(ep: Endpoint, header: Uint8Array): void {
  ep.hold(header);
  heldNew.push(ep);
  if (!releaseScheduled) {
    releaseScheduled = true;
    setImmediate(releaseTurn);
  }
}
