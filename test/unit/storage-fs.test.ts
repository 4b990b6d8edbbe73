// The storage-driver suite on the filesystem driver, in a temp directory per test.
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import { tempName } from "../../src/storage/atomic.ts";
import { filesystemCache } from "../../src/storage/cache.ts";
import { storageDriverSuite } from "./storage-driver.suite.ts";

const dirs: string[] = [];
after(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

storageDriverSuite("filesystem", async () => {
  const dir = await mkdtemp(join(tmpdir(), "regmirror-fs-driver-"));
  dirs.push(dir);
  const cache = filesystemCache(dir);
  await mkdir(cache.paths.tmpDir, { recursive: true });
  return {
    ...cache,
    // A process killed mid-fill leaves its temp file; BlobStore.init at the next start clears it.
    crashDebris: async (_key, bytes) => {
      await writeFile(tempName(cache.paths.tmpDir), bytes.subarray(0, bytes.length / 2));
      return async () => (await readdir(cache.paths.tmpDir)).length;
    },
  };
});
