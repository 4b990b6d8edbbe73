import winston from "winston";

// One logger for the process. JSON lines for machines (the default when stdout is not a
// terminal), readable lines for people. Credentials never reach it: nothing logs headers.

export function createLogger(level: string, format: "auto" | "json" | "text"): winston.Logger {
  const text = format === "text" || (format === "auto" && process.stdout.isTTY === true);
  return winston.createLogger({
    level,
    format: text
      ? winston.format.combine(
          winston.format.timestamp(),
          winston.format.printf(({ timestamp, level: lvl, message, ...meta }) => {
            const rest = Object.entries(meta)
              .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
              .join(" ");
            return `${String(timestamp)} ${lvl} ${String(message)}${rest ? " " + rest : ""}`;
          }),
        )
      : winston.format.combine(winston.format.timestamp(), winston.format.json()),
    transports: [new winston.transports.Console()],
  });
}
