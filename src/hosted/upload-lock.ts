import { readFile, rm, stat, utimes, writeFile } from "node:fs/promises";

// Locks shared by the processes of one host (the workers, which share the uploads directory): a
// file made with O_EXCL that names its owner's pid. It is a lease, renewed while held; one whose
// owner is gone, or that nobody renewed for `leaseMs`, is taken over. Two takers of the same
// stale lock at the same instant could both win: that needs a crashed owner and a client sending
// two requests for one session at once, and costs a failed digest check at worst, since what is
// published is always hashed first.

export class LockBusyError extends Error {
  constructor(readonly path: string) {
    super(`locked: ${path}`);
    this.name = "LockBusyError";
  }
}

/** The lock's directory is gone (the thing it guards was removed). */
export class LockMissingError extends Error {
  constructor(readonly path: string) {
    super(`no such directory for ${path}`);
    this.name = "LockMissingError";
  }
}

export class Locks {
  /** Locks this process holds, by path. */
  private readonly held = new Set<string>();

  constructor(private readonly leaseMs: number) {}

  async run<T>(path: string, work: () => Promise<T>): Promise<T> {
    await this.take(path);
    this.held.add(path);
    const renew = setInterval(
      () => {
        const now = new Date();
        utimes(path, now, now).catch(() => undefined);
      },
      Math.max(1000, this.leaseMs / 3),
    ).unref();
    try {
      return await work();
    } finally {
      clearInterval(renew);
      this.held.delete(path);
      await rm(path, { force: true });
    }
  }

  private async take(path: string): Promise<void> {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await writeFile(path, String(process.pid), { flag: "wx" });
        return;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT") throw new LockMissingError(path);
        if (code !== "EEXIST") throw err;
      }
      if (!(await this.stale(path))) break;
      await rm(path, { force: true });
    }
    throw new LockBusyError(path);
  }

  private async stale(path: string): Promise<boolean> {
    let pid: number;
    try {
      const [text, s] = await Promise.all([readFile(path, "utf8"), stat(path)]);
      if (Date.now() - s.mtimeMs > this.leaseMs) return true;
      pid = Number(text);
    } catch {
      return true; // released meanwhile
    }
    if (!Number.isInteger(pid) || pid <= 0) return true; // not one of ours: torn or foreign
    // Our own pid on a lock we do not hold: left by an earlier process that had this pid.
    if (pid === process.pid) return !this.held.has(path);
    try {
      process.kill(pid, 0);
      return false;
    } catch (err) {
      // EPERM: a live process of another user.
      return (err as NodeJS.ErrnoException).code === "ESRCH";
    }
  }
}
