import { workerHello } from "./cluster/channel.ts";
import { serveProcess } from "./serve.ts";

// A cluster worker's entry (the primary forks this file, cluster/primary.ts). Not main.ts: a
// worker needs no command line and no configuration loader. The primary has loaded and
// validated the configuration once and hands it over with the secrets every worker shares, so a
// worker never loads commander, js-yaml or zod (together ~300 ms and ~15 MB a process at start).

// The serving code loads while the primary answers.
const [hello] = await Promise.all([workerHello(), import("./start.ts")]);
await serveProcess(hello.config, { workers: hello.workers, tokenKey: hello.tokenKey });
process.send!({ regmirrorWorker: "listening" });
