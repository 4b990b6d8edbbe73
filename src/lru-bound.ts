// Bounds an lru-cache by its number of entries without paying for the bound up front.
//
// Given `max`, lru-cache allocates its whole index at construction: two arrays and two typed
// arrays of `max` slots and a free-slot stack. The caches that guard against floods (tag records,
// pull counts, login failures, tokens) have bounds of 10,000–100,000 and hold a few dozen entries
// in practice, so those indexes were ~7 MB of every serving process (each worker) before the
// first entry. Counted as a size of one per entry, the same bound is kept and the index grows
// with use.

const ONE = () => 1;

/** lru-cache options: at most `entries` entries, nothing allocated for them in advance. */
export function atMost(entries: number): { maxSize: number; sizeCalculation: () => number } {
  return { maxSize: entries, sizeCalculation: ONE };
}
