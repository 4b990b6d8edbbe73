// The circuit breaker's state machine, on an injected clock.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Breaker, errorOutcome, isOutage } from "../../src/upstream/breaker.ts";
import { RegistryError } from "../../src/oci/errors.ts";

function clocked(threshold = 3, coolDownMs = 10_000) {
  let now = 1_000_000;
  const changes: boolean[] = [];
  const breaker = new Breaker({ threshold, coolDownMs, now: () => now, onChange: (o) => changes.push(o) });
  return { breaker, changes, advance: (ms: number) => void (now += ms) };
}

test("opens after three consecutive failures, and refuses at once while open", () => {
  const { breaker, changes } = clocked();
  for (let i = 0; i < 2; i++) breaker.failure(breaker.acquire()!);
  assert.equal(breaker.state, "closed");
  assert.equal(breaker.blocked(), false);
  breaker.failure(breaker.acquire()!);
  assert.equal(breaker.state, "open");
  assert.ok(breaker.isOpen());
  assert.ok(breaker.blocked());
  assert.equal(breaker.acquire(), undefined);
  assert.equal(breaker.retryInMs(), 10_000);
  assert.deepEqual(changes, [true]);
});

test("an answer between failures resets the count: only consecutive failures open it", () => {
  const { breaker } = clocked();
  for (let i = 0; i < 10; i++) {
    breaker.failure(breaker.acquire()!);
    breaker.failure(breaker.acquire()!);
    breaker.success(); // e.g. a 404: the upstream at work
  }
  assert.equal(breaker.state, "closed");
});

test("after the cool-down one probe goes through; its success closes the breaker", () => {
  const { breaker, changes, advance } = clocked();
  for (let i = 0; i < 3; i++) breaker.failure(breaker.acquire()!);
  advance(9_999);
  assert.equal(breaker.acquire(), undefined, "still cooling down");
  advance(1);
  assert.equal(breaker.blocked(), false, "blocked() does not use up the probe");
  assert.equal(breaker.acquire(), "probe");
  assert.equal(breaker.state, "half-open");
  assert.ok(breaker.isOpen(), "down until the probe says otherwise");
  assert.equal(breaker.acquire(), undefined, "one probe at a time");
  assert.ok(breaker.blocked());
  breaker.settle("probe", "success");
  assert.equal(breaker.state, "closed");
  assert.equal(breaker.acquire(), "normal");
  assert.deepEqual(changes, [true, false]);
});

test("a failed probe opens the breaker for another full cool-down", () => {
  const { breaker, changes, advance } = clocked();
  for (let i = 0; i < 3; i++) breaker.failure(breaker.acquire()!);
  advance(10_000);
  breaker.settle(breaker.acquire()!, "failure");
  assert.equal(breaker.state, "open");
  assert.equal(breaker.retryInMs(), 10_000);
  advance(5_000);
  assert.equal(breaker.acquire(), undefined);
  advance(5_000);
  assert.equal(breaker.acquire(), "probe");
  assert.deepEqual(changes, [true], "still open throughout: no flapping reported");
});

test("an abandoned (aborted) probe hands the probe to the next request; it counts as nothing", () => {
  const { breaker, advance } = clocked();
  for (let i = 0; i < 3; i++) breaker.failure(breaker.acquire()!);
  advance(10_000);
  breaker.settle(breaker.acquire()!, "abandon");
  assert.equal(breaker.state, "open");
  assert.equal(breaker.acquire(), "probe", "no second cool-down for an abort");

  // Aborts never open a closed breaker either.
  const fresh = clocked().breaker;
  for (let i = 0; i < 10; i++) fresh.settle(fresh.acquire()!, "abandon");
  assert.equal(fresh.state, "closed");
});

test("late results of requests from before it opened: a failure changes nothing, an answer closes", () => {
  const { breaker, advance } = clocked();
  const early = breaker.acquire()!;
  for (let i = 0; i < 3; i++) breaker.failure(breaker.acquire()!);
  breaker.failure(early);
  assert.equal(breaker.retryInMs(), 10_000, "no new cool-down for an old failure");
  advance(10_000);
  breaker.acquire(); // the probe
  breaker.failure("normal");
  assert.equal(breaker.state, "half-open", "only the probe decides a half-open breaker");
  breaker.success();
  assert.equal(breaker.state, "closed");
});

test("what counts as an outage: no answer, timeouts, 5xx and 429; not 404 or an abort", () => {
  for (const s of [500, 502, 503, 504, 429]) assert.ok(isOutage(s), String(s));
  for (const s of [200, 206, 307, 401, 404]) assert.ok(!isOutage(s), String(s));
  const unavailable = new RegistryError("UNAVAILABLE", "upstream registry unreachable");
  assert.equal(errorOutcome(unavailable, false), "failure");
  assert.equal(errorOutcome(unavailable, true), "abandon", "our own abort");
  assert.equal(errorOutcome(new DOMException("aborted", "AbortError"), true), "abandon");
  assert.equal(errorOutcome(new RegistryError("NAME_UNKNOWN", "401"), false), "success");
  assert.equal(errorOutcome(new RegistryError("UPSTREAM_ERROR", "refused redirect"), false), "abandon");
});
