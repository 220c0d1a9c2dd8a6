// Creates N groups with one http app each through the API of a server started from CHECKOUT; prints the time.
// npx bun bench/create-groups.ts CHECKOUT [N]   (run under flock /tmp/warren-bench.lock; loopback only)
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
const [checkout, nArg] = Bun.argv.slice(2);
const N = Number(nArg ?? 3000);
const dir = mkdtempSync("/tmp/create-");
const free = () => { const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } }); const p = s.port; s.stop(true); return p; };
const [cp, ap, vp] = [free(), free(), free()];
const admin = randomBytes(16).toString("hex");
writeFileSync(`${dir}/server.toml`, `bindAddr = "127.0.0.1"\ncontrolPort = ${cp}\napiHost = "127.0.0.1"\napiPort = ${ap}\nadminToken = "${admin}"\ndataDir = "${dir}/data"\nlogLevel = "warn"\nvhostHTTPPort = ${vp}\nsubdomainHost = "tun.test"\nregistrationMaxGroups = 100000\n`);
const p = Bun.spawn([process.execPath, `${checkout}/server.ts`, "--config", `${dir}/server.toml`], { cwd: checkout, stdout: "ignore", stderr: "inherit" });
for (let i = 0; i < 200; i++) { try { await fetch(`http://127.0.0.1:${ap}/api/groups`, { headers: { authorization: `Bearer ${admin}` } }); break; } catch { await Bun.sleep(50); } }
const t0 = performance.now();
const marks: string[] = [];
for (let i = 0; i < N; i++) {
  const r = await fetch(`http://127.0.0.1:${ap}/api/groups`, { method: "POST", headers: { authorization: `Bearer ${admin}`, "content-type": "application/json" }, body: JSON.stringify({ name: `g${i}`, token: "t".repeat(32), apps: [{ name: "web", type: "http", subdomain: `g${i}` }] }) });
  if (r.status !== 201) { console.log("status", r.status, await r.text()); break; }
  if ((i + 1) % 1000 === 0) marks.push(`${i + 1}: ${((performance.now() - t0) / 1000).toFixed(2)} s`);
}
console.log(`${checkout}: ${N} groups created in ${((performance.now() - t0) / 1000).toFixed(2)} s (${marks.join(", ")})`);
p.kill(); await p.exited;
