/**
 * TLS material: the server's certificate (given, or self-signed on first
 * start and kept in dataDir) and SHA-256 fingerprints for pinning.
 */
import { join } from "node:path";
import { readText, writeNew } from "./files.ts";

let x509Module: Promise<typeof import("@peculiar/x509")> | null = null;

/** The certificate library, loaded on first use. */
function x509lib(): Promise<typeof import("@peculiar/x509")> {
  x509Module ??= (async () => {
    // @peculiar/x509 resolves its services through tsyringe, which needs the Reflect metadata API
    // installed first; static imports may be reordered by `bun build`, so load them in sequence.
    await import("reflect-metadata");
    const x509 = await import("@peculiar/x509");
    x509.cryptoProvider.set(crypto);
    return x509;
  })();
  return x509Module;
}

/** File names of the generated certificate and key in dataDir. */
export const GENERATED_CERT_FILE = "tls-cert.pem";
export const GENERATED_KEY_FILE = "tls-key.pem";
/** Validity of a generated certificate: ten years, since clients pin its fingerprint rather than trust a date. */
const GENERATED_CERT_DAYS = 3650;

/** A certificate and key in PEM, with the certificate's SHA-256 fingerprint (64 lowercase hex digits). */
export interface TlsMaterial {
  readonly cert: string;
  readonly key: string;
  readonly fingerprint: string;
  /** Whether this start created it. */
  readonly generated: boolean;
}

/** SHA-256 fingerprint of the first certificate in a PEM text. */
export async function fingerprintOf(certPem: string): Promise<string> {
  const x509 = await x509lib();
  const cert = new x509.X509Certificate(certPem);
  return Buffer.from(await cert.getThumbprint("SHA-256")).toString("hex");
}

/** Reads the configured certificate and key, or the generated pair in dataDir, creating it on first start. */
export async function loadServerTls(dataDir: string, certFile?: string, keyFile?: string): Promise<TlsMaterial> {
  if (certFile && keyFile) {
    // Bun.file(...).text() rejects with the errno code (ENOENT, EACCES) that the server's config error names.
    const cert = await Bun.file(certFile).text();
    return { cert, key: await Bun.file(keyFile).text(), fingerprint: await fingerprintOf(cert), generated: false };
  }
  const inMemory = dataDir === ":memory:";
  const certPath = join(dataDir, GENERATED_CERT_FILE);
  const keyPath = join(dataDir, GENERATED_KEY_FILE);
  const [storedCert, storedKey] = inMemory ? [null, null] : [await readText(certPath), await readText(keyPath)];
  if (storedCert !== null && storedKey !== null) return { cert: storedCert, key: storedKey, fingerprint: await fingerprintOf(storedCert), generated: false };
  const { cert, key } = await selfSigned();
  if (!inMemory) {
    // The key first, into a folder created 0700; the certificate is public.
    await writeNew(keyPath, key, { private: true });
    await writeNew(certPath, cert, { private: false });
  }
  return { cert, key, fingerprint: await fingerprintOf(cert), generated: true };
}

/** A fresh ECDSA P-256 self-signed certificate for "warren", valid for localhost and loopback too. */
export async function selfSigned(commonName = "warren"): Promise<{ cert: string; key: string }> {
  const x509 = await x509lib();
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = await crypto.subtle.generateKey(alg, true, ["sign", "verify"]);
  const serial = Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString("hex").replace(/^[89a-f]/, "1");
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial,
    name: `CN=${commonName}`,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + GENERATED_CERT_DAYS * 86_400_000),
    keys,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.SubjectAlternativeNameExtension([
        { type: "dns", value: commonName },
        { type: "dns", value: "localhost" },
        { type: "ip", value: "127.0.0.1" },
        { type: "ip", value: "::1" },
      ]),
    ],
  });
  const pkcs8 = await crypto.subtle.exportKey("pkcs8", keys.privateKey);
  return { cert: cert.toString("pem"), key: x509.PemConverter.encode(pkcs8, "PRIVATE KEY") };
}
