/**
 * A UDP app: its public UDP port (UdpPublic, lib/udp.ts) and one work connection
 * kept for good, carrying datagram frames both ways; a lost one is replaced.
 */
import { FrameType, type FrameReader } from "../../../protocol.ts";
import { log } from "../../log.ts";
import { chain, type Endpoint } from "../../net/endpoint.ts";
import type { AppRecord } from "../../registry/types.ts";
import { UdpPublic } from "../../udp.ts";
import type { AppHost, PublicApp } from "./app.ts";

/** Binds the app's UDP port; a string says why it cannot be. */
export async function openUdp(rec: AppRecord, host: AppHost): Promise<PublicApp | string> {
  const group = host.groupName;
  const bound = await UdpPublic.open(host.bindAddr, rec, host.stats(rec.name), host.udpIdleTimeoutMs, { group, app: rec.name });
  if (typeof bound === "string") return bound;
  const udp = bound;
  let closed = false;
  const app: PublicApp = {
    record: rec,
    bindWork(work: Endpoint, reader: FrameReader): void {
      udp.attach(work);
      let acked = false;
      work.onData = (ep, chunk) => {
        if (!acked) {
          reader.push(chunk);
          const res = reader.next();
          if (!res) return;
          if (!res.ok || res.msg.type !== FrameType.WorkAck || !res.msg.ok) {
            log.warn("udp work connection refused", { group, app: rec.name, reason: res.ok && res.msg.type === FrameType.WorkAck ? res.msg.message : "bad answer" });
            return ep.destroy();
          }
          acked = true;
          chunk = reader.rest();
        }
        const err = udp.fromClient(chunk);
        if (err) {
          log.warn("bad datagram frame from client", { group, app: rec.name, error: err.message });
          ep.destroy();
        }
      };
      work.onClose = chain(work.onClose, () => {
        if (udp.work === work) udp.work = null;
        // Still served: get another work connection.
        if (!closed) host.wantWork(app);
      });
    },
    close(): void {
      closed = true;
      udp.close();
    },
  };
  return app;
}
