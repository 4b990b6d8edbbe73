import { RegistryError } from "../oci/errors.ts";
import type { StorageDriver } from "../storage/driver.ts";
import { tagsPrefix } from "../storage/keys.ts";
import type { Routed } from "./routing.ts";

// /v2/_catalog and /v2/<name>/tags/list, answered from what the cache holds: a mirror lists
// what it can serve without the upstream. Pagination per the distribution spec: `n` items after
// `last`, lexically ordered, and a Link header when there is more.

export interface Page {
  items: string[];
  /** Set when more follow: the `last` of the next page. */
  next: string | undefined;
}

const MAX_PAGE = 10_000;

export function paginate(sorted: string[], n: number | undefined, last: string | undefined): Page {
  const from = last === undefined ? 0 : sorted.findIndex((s) => s > last);
  const rest = from === -1 ? [] : sorted.slice(from);
  const size = Math.min(n ?? MAX_PAGE, MAX_PAGE);
  const items = rest.slice(0, size);
  return { items, next: rest.length > size && items.length > 0 ? items[items.length - 1] : undefined };
}

/** Tags of one repository; NAME_UNKNOWN when the mirror has none. */
export async function cachedTags(driver: StorageDriver, at: Routed): Promise<string[]> {
  const prefix = tagsPrefix(at.upstream, at.repo);
  const tags: string[] = [];
  // A listing that fails (EACCES, an unreachable bucket) is a fault, not a 404.
  for await (const o of driver.list(prefix)) {
    const name = o.key.slice(prefix.length);
    if (!name.includes("/") && name.endsWith(".json")) tags.push(name.slice(0, -".json".length));
  }
  if (tags.length === 0)
    throw new RegistryError("NAME_UNKNOWN", "no tags of this repository are cached", {
      detail: { name: at.repo },
    });
  return tags.sort();
}

/**
 * Cached repositories, named as a client would ask for them: plain for the default upstream (or
 * for the one `ns` names), behind their registry's name for the others. From the store's index,
 * so a catalog request costs no directory walk.
 */
export function cachedRepositories(
  index: ReadonlyMap<string, ReadonlySet<string>>,
  defaultName: string,
  only: string | undefined,
): string[] {
  const names: string[] = [];
  for (const [upstream, repos] of index) {
    if (only !== undefined && upstream !== only) continue;
    for (const repo of repos) names.push(upstream === (only ?? defaultName) ? repo : `${upstream}/${repo}`);
  }
  return names.sort();
}
