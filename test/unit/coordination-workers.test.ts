// The workers' coordinator against the shared conformance suite: two WorkerCoordinators and the
// primary's own member, on one CoordinationHub, over pipes that copy as cluster IPC does.
import { CoordinationHub } from "../../src/coordination/hub.ts";
import { WorkerCoordinator } from "../../src/coordination/member.ts";
import { pipe } from "./coordination-channels.ts";
import { coordinationSuite } from "./coordination.suite.ts";

coordinationSuite("workers", async () => {
  let now = 1_000_000;
  const hub = new CoordinationHub({ now: () => now });
  const workers = ["1", "2"].map((id) => {
    const p = pipe();
    hub.attach(id, p.hub);
    return new WorkerCoordinator(p.worker);
  });
  return {
    members: [...workers, hub.local],
    advance: (ms) => void (now += ms),
    close: async () => {
      await Promise.all([...workers, hub.local].map((m) => m.close()));
      hub.close();
    },
  };
});
