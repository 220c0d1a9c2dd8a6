/**
 * The generated certificate (lib/tls.ts, written with lib/der.ts) as other TLS code reads it:
 * node:crypto's X509Certificate, openssl when installed, and a real TLS handshake on loopback
 * that pins its fingerprint.
 */
import { describe, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fromPem, oid, time, toPem, uint } from "../lib/der.ts";
import { fingerprintOf, selfSigned } from "../lib/tls.ts";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");

describe("DER pieces", () => {
  test("INTEGER is minimal: leading zeros dropped, 0x00 before a set top bit", () => {
    expect(hex(uint(Uint8Array.of(0, 0, 5)))).toBe("020105");
    expect(hex(uint(Uint8Array.of(0x80)))).toBe("02020080");
    expect(hex(uint(Uint8Array.of(0, 0)))).toBe("020100");
  });
  test("OBJECT IDENTIFIER in base 128 (ecdsa-with-SHA256, from RFC 5758)", () => {
    expect(hex(oid("1.2.840.10045.4.3.2"))).toBe("06082a8648ce3d040302");
  });
  test("times: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280)", () => {
    expect(Buffer.from(time(new Date("2049-12-31T23:59:59.900Z")).subarray(2)).toString()).toBe("491231235959Z");
    expect(time(new Date("2049-12-31T23:59:59Z"))[0]).toBe(0x17);
    expect(Buffer.from(time(new Date("2050-01-01T00:00:00Z")).subarray(2)).toString()).toBe("20500101000000Z");
    expect(time(new Date("2050-01-01T00:00:00Z"))[0]).toBe(0x18);
  });
  test("PEM round trip, long lengths included, and null without the label", () => {
    const der = crypto.getRandomValues(new Uint8Array(1000));
    const pem = toPem("THING", der);
    expect(pem.split("\n").every((l) => l.length <= 64)).toBe(true);
    expect(hex(fromPem(pem, "THING")!)).toBe(hex(der));
    expect(fromPem(pem, "CERTIFICATE")).toBeNull();
    expect(fromPem("-----BEGIN THING-----\n-----END THING-----\n", "THING")).toBeNull();
  });
});

describe("selfSigned", () => {
  test("node:crypto reads it: self-signature valid, names, ten years, not a CA, fingerprint as Bun computes it", async () => {
    const { cert, key } = await selfSigned();
    const x = new X509Certificate(cert);
    expect(x.verify(x.publicKey)).toBe(true);
    expect(x.subject).toBe("CN=warren");
    expect(x.issuer).toBe("CN=warren");
    expect(x.ca).toBe(false);
    expect(x.subjectAltName).toBe("DNS:warren, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1");
    const days = (Date.parse(x.validTo) - Date.parse(x.validFrom)) / 86_400_000;
    expect(days).toBeGreaterThan(3649);
    expect(days).toBeLessThan(3651);
    expect(Date.parse(x.validFrom)).toBeLessThanOrEqual(Date.now());
    expect(x.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    expect(await fingerprintOf(cert)).toBe(x.fingerprint256.replace(/:/g, "").toLowerCase());
    expect(key).toStartWith("-----BEGIN PRIVATE KEY-----\n");
  });

  test("each certificate has its own key and serial number", async () => {
    const [a, b] = [await selfSigned(), await selfSigned()];
    expect(a.key).not.toBe(b.key);
    expect(new X509Certificate(a.cert).serialNumber).not.toBe(new X509Certificate(b.cert).serialNumber);
  });

  test("openssl verifies it and gives the same fingerprint", async () => {
    if (!Bun.which("openssl")) return void console.warn("openssl not installed: this cross-check did not run");
    const dir = mkdtempSync(join(tmpdir(), "warren-tls-"));
    try {
      const { cert } = await selfSigned("tunnel.test");
      writeFileSync(join(dir, "c.pem"), cert);
      const verify = Bun.spawnSync(["openssl", "verify", "-CAfile", join(dir, "c.pem"), join(dir, "c.pem")]);
      expect(verify.stdout.toString()).toContain(": OK");
      const fp = Bun.spawnSync(["openssl", "x509", "-in", join(dir, "c.pem"), "-noout", "-fingerprint", "-sha256"]).stdout.toString();
      expect(fp.split("=")[1]!.trim().replace(/:/g, "").toLowerCase()).toBe(await fingerprintOf(cert));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a TLS client on loopback completes the handshake and sees the fingerprint it pins", async () => {
    const { cert, key } = await selfSigned();
    const server = Bun.listen({ hostname: "127.0.0.1", port: 0, tls: { cert, key }, socket: { data(s, d) { s.write(d); } } });
    try {
      const seen = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no TLS handshake within 5 s")), 5_000);
        Bun.connect({
          hostname: "127.0.0.1",
          port: server.port,
          tls: { rejectUnauthorized: false, serverName: "localhost" },
          socket: {
            handshake(s, ok, err) {
              clearTimeout(timer);
              if (!ok && (err as NodeJS.ErrnoException | null)?.code !== "DEPTH_ZERO_SELF_SIGNED_CERT") return reject(err);
              resolve(s.getPeerCertificate().fingerprint256);
              s.end();
            },
            data() {},
          },
        }).catch(reject);
      });
      expect(seen.replace(/:/g, "").toLowerCase()).toBe(await fingerprintOf(cert));
    } finally {
      server.stop(true);
    }
  });
});

describe("fingerprintOf", () => {
  test("takes the first certificate of a chain, and refuses a text without one", async () => {
    const [a, b] = [await selfSigned(), await selfSigned()];
    expect(await fingerprintOf(a.cert + b.cert)).toBe(await fingerprintOf(a.cert));
    await expect(fingerprintOf(a.key)).rejects.toThrow("no PEM certificate");
  });
});
