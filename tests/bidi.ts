/**
 * A minimal WebDriver BiDi client for Debian's Firefox (`apt-get install firefox-esr`):
 * playwright-core can drive Chromium, but its Firefox needs a patched build that cannot
 * be downloaded here, and its BiDi path asks Firefox ESR for a command it lacks. This is
 * the few commands the dashboard's Firefox test needs: navigate, evaluate, console entries.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../bench/common.ts";

/** Where Debian puts it (WARREN_FIREFOX points elsewhere). */
export const FIREFOX = process.env.WARREN_FIREFOX ?? "/usr/bin/firefox-esr";

export class Firefox {
  #ws!: WebSocket;
  #id = 0;
  #pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  /** Console entries of level "error", and uncaught exceptions, in order. */
  readonly errors: string[] = [];
  context = "";
  #proc!: ReturnType<typeof Bun.spawn>;
  #profile = "";

  static async launch(width = 1280, height = 900): Promise<Firefox> {
    const f = new Firefox();
    const port = await freePort();
    f.#profile = mkdtempSync(join(tmpdir(), "warren-ff-"));
    f.#proc = Bun.spawn([FIREFOX, "--headless", "--no-remote", "--profile", f.#profile, `--remote-debugging-port=${port}`, `--width=${width}`, `--height=${height}`, "about:blank"], { stdout: "ignore", stderr: "pipe" });
    // Firefox says where its BiDi endpoint listens; waited for at most 30 s.
    const reader = (f.#proc.stderr as ReadableStream<Uint8Array>).getReader();
    let text = "";
    const deadline = Date.now() + 30_000;
    while (!/WebDriver BiDi listening on (ws:\/\/\S+)/.test(text)) {
      if (Date.now() > deadline) throw new Error(`Firefox did not start its BiDi endpoint in 30 s: ${text.slice(-500)}`);
      const { value, done } = await reader.read();
      if (done) throw new Error(`Firefox exited: ${text.slice(-500)}`);
      text += new TextDecoder().decode(value);
    }
    reader.releaseLock();
    f.#ws = new WebSocket(`${/WebDriver BiDi listening on (ws:\/\/\S+)/.exec(text)![1]}/session`);
    await new Promise<void>((resolve, reject) => {
      f.#ws.onopen = () => resolve();
      f.#ws.onerror = () => reject(new Error("cannot open Firefox's BiDi WebSocket"));
    });
    f.#ws.onmessage = (e) => f.#message(JSON.parse(String(e.data)));
    // A first session can take long on a loaded machine (Firefox finishes starting behind it).
    await f.send("session.new", { capabilities: {} }, 60_000);
    await f.send("session.subscribe", { events: ["log.entryAdded"] });
    const tree = await f.send("browsingContext.getTree", {});
    f.context = tree.contexts[0].context;
    await f.send("browsingContext.setViewport", { context: f.context, viewport: { width, height } });
    return f;
  }

  #message(m: any): void {
    if (m.id !== undefined) {
      const p = this.#pending.get(m.id);
      this.#pending.delete(m.id);
      if (m.type === "error") p?.reject(new Error(`${m.error}: ${m.message}`));
      else p?.resolve(m.result);
      return;
    }
    if (m.method === "log.entryAdded" && (m.params.level === "error" || m.params.type === "javascript")) {
      this.errors.push(`${m.params.type}: ${m.params.text}`);
    }
  }

  send(method: string, params: unknown, ms = 15_000): Promise<any> {
    const id = ++this.#id;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${method}: no answer in ${ms} ms`)), ms);
      this.#pending.set(id, {
        resolve: (v) => (clearTimeout(t), resolve(v)),
        reject: (e) => (clearTimeout(t), reject(e)),
      });
      this.#ws.send(JSON.stringify({ id, method, params }));
    });
  }

  navigate(url: string): Promise<unknown> {
    return this.send("browsingContext.navigate", { context: this.context, url, wait: "complete" });
  }

  /** Evaluates `expression` in the page (a promise is awaited); returns its value (strings, numbers, booleans). */
  async eval<T = unknown>(expression: string): Promise<T> {
    const r = await this.send("script.evaluate", { expression, target: { context: this.context }, awaitPromise: true, resultOwnership: "none" });
    if (r.type === "exception") throw new Error(`page script failed: ${r.exceptionDetails?.text}`);
    return r.result?.value as T;
  }

  /** Polls `expression` until it is truthy, failing after `ms`. */
  async until(expression: string, ms: number, what: string): Promise<void> {
    const end = Date.now() + ms;
    while (!(await this.eval<boolean>(`!!(${expression})`))) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await Bun.sleep(50);
    }
  }

  async close(): Promise<void> {
    try {
      await this.send("browser.close", {}, 5_000);
    } catch {}
    this.#ws?.close();
    this.#proc?.kill();
    await this.#proc?.exited;
    rmSync(this.#profile, { recursive: true, force: true });
  }
}
