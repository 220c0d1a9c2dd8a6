/** Day-two operations (issue 18): what a new user hit, each pinned by a test. */
import { afterAll, describe, expect, test } from "bun:test";
import { Connector } from "../lib/client/connector.ts";
import { setLogSink } from "../lib/log.ts";
import { clientConfig, createGroup, deadPort, echoApp, testServer, until } from "./helpers.ts";

const lines: string[] = [];
setLogSink((l) => lines.push(l));
const echo = await echoApp();
const cleanup: (() => void)[] = [];
afterAll(() => {
  for (const f of cleanup.reverse()) f();
  echo.close();
  setLogSink((l) => process.stderr.write(l + "\n"));
});

/** A connector for `group` at `server`, stopped after the file's tests. */
function client(server: { controlPort: number }, group: string, extra: Record<string, unknown> = {}): Connector {
  const c = new Connector(clientConfig(server, group, [{ name: "a", localAddr: `127.0.0.1:${echo.port}` }], extra));
  cleanup.push(() => c.stop());
  return c;
}

describe("the client says why it cannot reach the server", () => {
  test("connection refused names the address and port", async () => {
    const port = await deadPort();
    lines.length = 0;
    const c = client({ controlPort: port }, "g");
    c.start();
    await until(() => lines.some((l) => l.includes("cannot reach the server")), 5000, "the refusal logged");
    c.stop();
    const line = lines.find((l) => l.includes("cannot reach the server"))!;
    expect(line).toContain(`connection refused by 127.0.0.1:${port}`);
  });
});

describe("a refused login stops the client", () => {
  test("a wrong token: one failed login, a fatal event with a clear message, no retry to lock its address out", async () => {
    const server = await testServer();
    cleanup.push(() => server.stop());
    expect(await createGroup(server, "home", ["a"])).toBe(201);
    lines.length = 0;
    const c = client(server, "home", { token: "a-wrong-token-that-is-long" });
    const fatal = new Promise<string>((r) => c.once("fatal", r));
    c.start();
    expect(await fatal).toBe("authentication failed");
    expect(lines.some((l) => l.includes("the server refused the login (authentication failed): check group and token in client.toml"))).toBe(true);
    // Past the first backoff steps (at most 250 ms, then 500 ms): a retry would have come and failed by now.
    await Bun.sleep(800);
    expect(lines.filter((l) => l.includes("login failed")).length).toBe(1);
    expect(server.hub.guard.blocked("127.0.0.1")).toBe(false);
  });
});
