import winston from "winston";
import { redact, redactText } from "./config/redact.ts";

// One logger for the process. JSON lines for machines (the default when stdout is not a
// terminal), readable lines for people. Credentials never reach it: nothing logs headers, and
// every entry but the per-request line (whose fields are all our own) goes through the same
// redaction as config messages, so an error that quotes a URL with userinfo or an object with a
// password shows neither.

const redacting = winston.format((info) => {
  if (info.message === "request") return info;
  for (const key of Object.keys(info)) {
    if (key === "level") continue;
    info[key] = key === "message" ? redactText(String(info[key])) : redact(info[key], key);
  }
  return info;
});

/** `meta` goes on every line (a worker's id, so a log tells which worker did what). */
export function createLogger(
  level: string,
  format: "auto" | "json" | "text",
  meta?: Record<string, unknown>,
): winston.Logger {
  const text = format === "text" || (format === "auto" && process.stdout.isTTY === true);
  return winston.createLogger({
    level,
    ...(meta ? { defaultMeta: meta } : {}),
    format: text
      ? winston.format.combine(
          redacting(),
          winston.format.timestamp(),
          winston.format.printf(({ timestamp, level: lvl, message, ...meta }) => {
            const rest = Object.entries(meta)
              .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
              .join(" ");
            return `${String(timestamp)} ${lvl} ${String(message)}${rest ? " " + rest : ""}`;
          }),
        )
      : winston.format.combine(redacting(), winston.format.timestamp(), winston.format.json()),
    transports: [new winston.transports.Console()],
  });
}
