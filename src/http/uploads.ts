import type { IncomingMessage, ServerResponse } from "node:http";
import { RegistryError } from "../oci/errors.ts";

// Blob uploads to hosted repositories (POST, PATCH, PUT, GET, DELETE of /v2/<name>/blobs/uploads/).

export function uploadRoutes() {
  return async (
    _req: IncomingMessage,
    _res: ServerResponse,
    _repo: string,
    _session: string | undefined,
    _query: URLSearchParams,
  ): Promise<void> => {
    throw new RegistryError("UNSUPPORTED", "uploads are not implemented yet", { status: 405 });
  };
}
