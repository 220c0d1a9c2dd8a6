/** The API's one error type, so that handlers read straight-line and `app.onError` writes every refusal. */
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { WarrenError } from "../errors.ts";

/** A refusal the client sees: its status, its exact JSON body and any extra headers. */
export class HttpError extends WarrenError<"http"> {
  override readonly name = "HttpError";

  constructor(
    readonly status: ContentfulStatusCode,
    readonly body: { readonly error: string; readonly issues?: readonly { path: string; message: string }[] },
    readonly headers?: Readonly<Record<string, string>>,
  ) {
    super("http", body.error, body.issues?.[0]?.path);
  }
}
