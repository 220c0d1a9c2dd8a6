/** The version of this build, from package.json (bundled into the compiled executables). */
import pkg from "../package.json" with { type: "json" };
import { PROTOCOL_VERSION } from "../protocol.ts";

/** "0.1.0". */
export const VERSION: string = pkg.version;

/** What `--version` prints for `program`: its version and the wire protocol it speaks. */
export function versionLine(program: string): string {
  return `${program} ${VERSION} (protocol ${PROTOCOL_VERSION})`;
}
