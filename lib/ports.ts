/** Port ranges ("20000-29999,6022") and free-port selection for apps. */

/** A set of port ranges. */
export class PortSet {
  readonly ranges: readonly (readonly [number, number])[];
  readonly size: number;
  constructor(ranges: readonly (readonly [number, number])[]) {
    this.ranges = ranges;
    this.size = ranges.reduce((n, [a, b]) => n + b - a + 1, 0);
  }

  /** Parses "20000-29999,6022"; returns an error sentence for bad input. */
  static parse(spec: string): PortSet | string {
    const ranges: [number, number][] = [];
    for (const raw of spec.split(",")) {
      const part = raw.trim();
      const m = /^(\d{1,5})(?:\s*-\s*(\d{1,5}))?$/.exec(part);
      if (!m) return `"${part}" is not a port or a range like 20000-29999`;
      const a = Number(m[1]);
      const b = m[2] === undefined ? a : Number(m[2]);
      if (a < 1 || b > 65535 || a > b) return `"${part}" is not within 1-65535 in ascending order`;
      ranges.push([a, b]);
    }
    return new PortSet(ranges);
  }

  /** Whether `port` is in the set. */
  has(port: number): boolean {
    for (const [a, b] of this.ranges) if (port >= a && port <= b) return true;
    return false;
  }

  /** The `i`-th port of the set, 0-based. */
  at(i: number): number {
    for (const [a, b] of this.ranges) {
      if (i <= b - a) return a + i;
      i -= b - a + 1;
    }
    throw new RangeError("index outside the port set");
  }

  /** A port not in `taken` that `probe` accepts, starting at a random place; null when none is left. */
  pick(taken: (port: number) => boolean, probe: (port: number) => boolean): number | null {
    const start = Math.floor(Math.random() * this.size);
    for (let k = 0; k < this.size; k++) {
      const port = this.at((start + k) % this.size);
      if (!taken(port) && probe(port)) return port;
    }
    return null;
  }
}

/** Whether a TCP port can be bound on `host` right now. */
export function canBindTcp(host: string, port: number): boolean {
  try {
    const l = Bun.listen({ hostname: host, port, exclusive: true, socket: { data() {} } });
    l.stop(true);
    return true;
  } catch {
    return false;
  }
}
