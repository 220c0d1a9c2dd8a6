/** Request bodies: read with a cap, parsed as JSON and checked against a valibot schema, or refused with a 4xx that names the mistake. */
import type { Context } from "hono";
import * as v from "valibot";
import { issueKey } from "../config/load.ts";
import { HttpError } from "./errors.ts";

/** Largest request body accepted; a group with hundreds of apps fits easily. */
export const MAX_BODY_BYTES = 256 * 1024;

/** A JSON body checked against `schema`, or an HttpError (413, 400); `emptyAs` stands for an empty body where a route allows one. */
export async function parseBody<S extends v.GenericSchema>(c: Context, schema: S, emptyAs?: unknown, prepare?: (data: unknown) => void): Promise<v.InferOutput<S>> {
  const text = await readCapped(c.req.raw, MAX_BODY_BYTES);
  if (text === null) throw new HttpError(413, { error: `body larger than ${MAX_BODY_BYTES} bytes` });
  let data: unknown;
  try {
    data = emptyAs !== undefined && text.trim() === "" ? emptyAs : JSON.parse(text);
  } catch {
    throw new HttpError(400, { error: "body is not valid JSON" });
  }
  prepare?.(data);
  const res = v.safeParse(schema, data);
  if (res.success) return res.output;
  const issues = res.issues.map((i) => ({ path: issueKey(i) || "(body)", message: i.expected === "never" ? "unknown key" : i.received === "undefined" ? "is required" : i.message }));
  throw new HttpError(400, { error: "invalid request body", issues });
}

/**
 * A request body as text, or null when it is larger than `max` bytes: refused by its
 * Content-Length before anything is read, or once the stream passes `max`, so an
 * oversized body costs at most `max` bytes of memory and always gets the API's own 413.
 */
export async function readCapped(req: Request, max: number): Promise<string | null> {
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (declared > max) return null;
  if (!req.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > max) {
      await reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  return new TextDecoder().decode(Buffer.concat(chunks));
}
