/**
 * The few files Warren keeps (dataDir, the registry, the admin token, a
 * generated certificate), through Bun's own file API rather than node:fs.
 *
 * Why: importing node:fs puts about 670 KiB of Bun's Node-compatibility code
 * on the JavaScript heap for the life of the process, and every garbage
 * collection of a relaying process pays for a larger heap. Bun copies each
 * socket read into a new buffer, so under bulk load a relay collects hundreds
 * of times a second: a bare Bun relay that merely loaded node:fs spent 19 %
 * more time collecting and 3.5 % more CPU per GB relayed (bench/optimisations.md).
 */

/** Permission bits masked off the files and folders that `writeNew` creates with `private`: owner only (0600, 0700). */
const PRIVATE_UMASK = 0o077;

/** The text of a file, or null when there is none. */
export async function readText(path: string): Promise<string | null> {
  const f = Bun.file(path);
  return (await f.exists()) ? f.text() : null;
}

/** The last write queued by `writeNew`; the next one starts when it has settled. */
let writes: Promise<void> = Promise.resolve();

/**
 * Writes `text` to `path`, creating missing parent folders. With `private`
 * the file is created 0600 and new folders 0700; otherwise the process's
 * umask applies (0644 and 0755 under the usual 022). A file that exists keeps its mode.
 */
export function writeNew(path: string, text: string, opts: { private: boolean }): Promise<void> {
  // Bun.write has no mode option (it is ignored): the umask decides, and the umask is the process's.
  // Writes run one after another, so that two overlapping writes never see (or restore) each other's umask.
  const write = async () => {
    const old = opts.private ? process.umask(PRIVATE_UMASK) : null;
    try {
      await Bun.write(path, text, { createPath: true });
    } finally {
      if (old !== null) process.umask(old);
    }
  };
  const done = writes.then(write);
  writes = done.catch(() => {});
  return done;
}

/**
 * Makes an existing file readable by its owner only (0600) if it is not already; true if it had to.
 * Rare (a file restored from a backup that lost its mode), so node:fs is loaded only then.
 */
export async function tighten(path: string): Promise<boolean> {
  const { mode } = await Bun.file(path).stat();
  if ((mode & 0o077) === 0) return false;
  const { chmod } = await import("node:fs/promises");
  await chmod(path, 0o600);
  return true;
}

/** Runs `fn` (synchronous) with files and folders it creates private to the owner: SQLite's database, -wal and -shm files. */
export function privately<T>(fn: () => T): T {
  const old = process.umask(PRIVATE_UMASK);
  try {
    return fn();
  } finally {
    process.umask(old);
  }
}
