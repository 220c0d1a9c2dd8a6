/**
 * TLS material: the server's certificate (given, or self-signed on first
 * start and kept in dataDir) and SHA-256 fingerprints for pinning.
 */
import { join } from "node:path";
import { ascii, fromPem, oid, seq, TAG, time, tlv, toPem, uint } from "./der.ts";
import { readText, writeNew } from "./files.ts";

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

/** SHA-256 fingerprint of the first certificate in a PEM text: the digest of its DER bytes, as `openssl x509 -fingerprint -sha256` and Bun's `fingerprint256` give it. */
export async function fingerprintOf(certPem: string): Promise<string> {
  const der = fromPem(certPem, "CERTIFICATE");
  if (!der) throw new Error("no PEM certificate (-----BEGIN CERTIFICATE-----) in the text");
  return Buffer.from(await crypto.subtle.digest("SHA-256", der)).toString("hex");
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

/** Object identifiers of what a generated certificate holds (RFC 5280, RFC 5758). */
const OID = {
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  commonName: "2.5.4.3",
  basicConstraints: "2.5.29.19",
  subjectAltName: "2.5.29.17",
} as const;
/** GeneralName choices of subjectAltName: [2] dNSName, [7] iPAddress (implicit, primitive). */
const SAN_DNS = 0x82;
const SAN_IP = 0x87;
/** Explicit tags of TBSCertificate: [0] version, [3] extensions. */
const TBS_VERSION = 0xa0;
const TBS_EXTENSIONS = 0xa3;
/** X.509 v3 is encoded as 2. */
const X509_V3 = 2;

/** A fresh ECDSA P-256 self-signed certificate for "warren", valid for localhost and loopback too. */
export async function selfSigned(commonName = "warren"): Promise<{ cert: string; key: string }> {
  const alg = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };
  const keys = await crypto.subtle.generateKey(alg, true, ["sign", "verify"]);
  const serial = crypto.getRandomValues(new Uint8Array(16));
  serial[0] = (serial[0]! & 0x7f) | 0x10; // positive and 16 bytes long (RFC 5280 4.1.2.2)
  const signatureAlgorithm = seq(oid(OID.ecdsaWithSha256));
  const name = seq(tlv(TAG.set, seq(oid(OID.commonName), tlv(TAG.utf8String, new TextEncoder().encode(commonName)))));
  const extension = (id: string, critical: boolean, value: Uint8Array) => seq(oid(id), ...(critical ? [tlv(TAG.boolean, Uint8Array.of(0xff))] : []), tlv(TAG.octetString, value));
  const tbs = seq(
    tlv(TBS_VERSION, uint(Uint8Array.of(X509_V3))),
    uint(serial),
    signatureAlgorithm,
    name,
    seq(time(new Date(Date.now() - 60_000)), time(new Date(Date.now() + GENERATED_CERT_DAYS * 86_400_000))),
    name,
    new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey)),
    tlv(
      TBS_EXTENSIONS,
      seq(
        extension(OID.basicConstraints, true, seq()), // cA FALSE is the default, so DER leaves it out
        extension(
          OID.subjectAltName,
          false,
          seq(tlv(SAN_DNS, ascii(commonName)), tlv(SAN_DNS, ascii("localhost")), tlv(SAN_IP, Uint8Array.of(127, 0, 0, 1)), tlv(SAN_IP, Uint8Array.of(...new Array(15).fill(0), 1))),
        ),
      ),
    ),
  );
  // WebCrypto signs ECDSA as r || s (IEEE P1363); X.509 wants SEQUENCE { r INTEGER, s INTEGER }.
  const rs = new Uint8Array(await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, keys.privateKey, tbs));
  const signature = seq(uint(rs.subarray(0, 32)), uint(rs.subarray(32)));
  const cert = seq(tbs, signatureAlgorithm, tlv(TAG.bitString, Uint8Array.of(0), signature));
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey));
  return { cert: toPem("CERTIFICATE", cert), key: toPem("PRIVATE KEY", pkcs8) };
}
