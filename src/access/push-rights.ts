import { RegistryError } from "../oci/errors.ts";

// Who may change hosted repositories, pure. Pulls are the gate's business (gate.ts); this
// decides pushes and deletes for a client the gate has identified, or for no one at all when
// there are no logins (auth.htpasswd empty).

export type Action = "pull" | "push" | "delete";

export class PushRights {
  private readonly pushers: ReadonlySet<string> | undefined;

  constructor(
    pushers: readonly string[],
    /** Pushes without logins (hosted.anonymousPush); only meaningful without htpasswd. */
    private readonly anonymousPush: boolean,
  ) {
    this.pushers = pushers.length ? new Set(pushers) : undefined;
  }

  /** A logged-in user's push or delete; DENIED when the user is not a pusher. */
  checkUser(user: string, action: Exclude<Action, "pull">, name: string): void {
    if (this.pushers === undefined || this.pushers.has(user)) return;
    throw new RegistryError("DENIED", `this user may not ${action} here`, { detail: { name, user } });
  }

  /** A push or delete on a mirror without logins: DENIED unless hosted.anonymousPush. */
  checkAnonymous(action: Exclude<Action, "pull">, name: string): void {
    if (this.anonymousPush) return;
    throw new RegistryError(
      "DENIED",
      `${action === "push" ? "pushing" : "deleting"} needs a login, and this registry has none (auth.htpasswd; or hosted.anonymousPush on a trusted network)`,
      { detail: { name } },
    );
  }
}

/** The scope a challenge names for an action on a repository. */
export function scopeFor(name: string, action: Action): string {
  return `repository:${name}:${action === "pull" ? "pull" : action === "push" ? "pull,push" : "delete"}`;
}
