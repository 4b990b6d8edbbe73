// `--storage s3`: regmirror on the S3 driver, against a real S3 server (the tests' single-node
// Ceph RADOS Gateway on loopback, test/fixtures/s3.ts), started once for the run. Two columns:
// "regmirror(s3)" streams cached blobs from the bucket through the mirror; "regmirror(s3,redirect)"
// answers a cached blob's GET with a 307 to a presigned bucket URL, and its warm blob figures are
// measured with a client that follows it (bench/follow-client.ts). Each start of either column
// gets a new, empty bucket.
import { startS3, type S3Server } from "../test/fixtures/s3.ts";
import type { TargetSpec } from "./targets.ts";

export const S3_STREAMED = "regmirror(s3)";
export const S3_REDIRECT = "regmirror(s3,redirect)";

export interface BenchS3 {
  server: S3Server;
  specs: TargetSpec[];
  /** RGW and OSD pids: the processes that move a bucket's bytes. */
  storagePids: number[];
  /** Buckets created (one per start of an S3 column). */
  buckets(): number;
  stop(): Promise<void>;
}

export async function startBenchS3(): Promise<BenchS3> {
  const server = await startS3();
  // pids are mon, osd, rgw: the mon is not on the data path.
  const storagePids = server.pids.slice(1);
  let buckets = 0;
  const env = (redirect: boolean) => async (): Promise<Record<string, string>> => {
    const bucket = await server.newBucket();
    buckets++;
    return {
      REGMIRROR_STORAGE_DRIVER: "s3",
      REGMIRROR_STORAGE_S3_ENDPOINT: server.endpoint,
      REGMIRROR_STORAGE_S3_BUCKET: bucket,
      REGMIRROR_STORAGE_S3_REGION: server.region,
      REGMIRROR_STORAGE_S3_FORCE_PATH_STYLE: "true",
      REGMIRROR_STORAGE_S3_ACCESS_KEY_ID: server.accessKeyId,
      REGMIRROR_STORAGE_S3_SECRET_ACCESS_KEY: server.secretAccessKey,
      REGMIRROR_STORAGE_S3_REDIRECT: String(redirect),
    };
  };
  const specs: TargetSpec[] = [
    { name: S3_STREAMED, kind: "regmirror", logLevel: "warn", freshEnv: env(false), storagePids },
    {
      name: S3_REDIRECT,
      kind: "regmirror",
      logLevel: "warn",
      freshEnv: env(true),
      storagePids,
      blobClient: "follow",
    },
  ];
  return { server, specs, storagePids, buckets: () => buckets, stop: () => server.stop() };
}
