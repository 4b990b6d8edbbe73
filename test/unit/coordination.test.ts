// The in-process coordinator against the shared conformance suite.
import { InProcessCoordinator } from "../../src/coordination/in-process.ts";
import { coordinationSuite } from "./coordination.suite.ts";

coordinationSuite("in-process", async () => {
  let now = 1_000_000;
  // One process is one scope: both "members" are the same coordinator.
  const coordinator = new InProcessCoordinator({ now: () => now });
  return {
    members: [coordinator, coordinator],
    advance: (ms) => void (now += ms),
    close: () => coordinator.close(),
  };
});
