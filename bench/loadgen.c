// loadgen: an HTTP/1.1 GET load generator that out-runs the servers it measures.
//
// Why not wrk or Node: wrk reads 8 KiB at a time and tops out around 0.5–1 GB/s on large bodies,
// and Node's HTTP client costs more CPU per byte than the servers under test. This client is one
// thread on epoll, keeps N keep-alive connections to 127.0.0.1:PORT busy, reads each response
// into one large scratch buffer and throws it away, and parses only what it must: the status line,
// Content-Length, chunked framing and "Connection: close".
//
// Usage: loadgen -p PORT[,PORT...] -c CONNS (-n COUNT | -d SECONDS) [-t TIMEOUT_S] [-H 'Name: value']... PATH...
//   -n COUNT    stop after COUNT responses (cold pulls, coalescing); paths are taken in turn
//               from a shared queue, so with -n = number of paths each path is fetched once
//   -d SECONDS  stop at the deadline; responses still in flight are abandoned and only the bytes
//               that arrived before it are counted (throughput = bytes / SECONDS)
//   -t TIMEOUT  hard limit for -n mode (default 120 s); the JSON then says "timed_out": true
// With several ports (replicas of one mirror), connection i goes to the (i mod n)-th port, and
// stays on it when it reconnects.
// All connections are opened first, then every connection sends its first request at once: that
// is what the coalescing figure needs (32 clients asking for the same cold blob together).
//
// Prints one JSON object: requests, errors (status other than 200 or a broken response), bytes
// (body bytes), elapsed_s, mb_per_s (10^6 bytes/s), the client's own CPU seconds, and percentiles
// in ms of time to the first response byte (headers_ms), to the first body byte (ttfb_ms) and to
// the last byte (total_ms), each measured from the moment the request was sent. The first two are
// recorded when they happen, so responses still running at a -d deadline count for them too.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SCRATCH (4 << 20) /* one read takes up to 4 MiB: few syscalls per 64 MiB blob */
#define HDR_MAX 16384

enum state { S_IDLE, S_HEADERS, S_BODY_LEN, S_BODY_EOF, S_CHUNK_SIZE, S_CHUNK_DATA, S_CHUNK_CRLF, S_TRAILER };

struct conn {
  int fd;
  enum state st;
  char line[HDR_MAX]; /* header block, or the current chunk-size / trailer line */
  size_t line_len;
  long long remain; /* body bytes left in S_BODY_LEN and S_CHUNK_DATA */
  int status, close_after, got_body;
  int port;
  double t_sent, t_headers, t_body; /* request sent, first response byte, first body byte */
};

struct samples {
  double *v;
  size_t n, cap;
};

#define MAX_PORTS 16
static int ports[MAX_PORTS], nports, nconns, npaths, timed_out;
static long long count_limit = -1, issued, completed, errors;
static double duration = -1, timeout_s = 120, t_start, t_stop;
static char **paths;
static char extra_headers[4096];
static long long body_bytes;
static struct samples s_headers, s_ttfb, s_total;
static char *scratch;
static int epfd;
static struct conn *conns;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void push(struct samples *s, double x) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 1024;
    s->v = realloc(s->v, s->cap * sizeof(double));
    if (!s->v) die("realloc");
  }
  s->v[s->n++] = x;
}

static void open_conn(struct conn *c) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(c->port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  /* Blocking connect: on loopback it completes at once, and it keeps the loop simple. */
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) die("fcntl");
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
  c->fd = fd;
  c->st = S_IDLE;
}

static void close_conn(struct conn *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->st = S_IDLE;
}

static int may_issue(void) {
  if (count_limit >= 0) return issued < count_limit;
  return now() < t_stop;
}

/* Requests are a few hundred bytes: one send() writes them whole into an empty socket buffer. */
static void send_request(struct conn *c) {
  if (!may_issue()) return;
  if (c->fd < 0) open_conn(c);
  const char *path = paths[issued % npaths];
  char req[8192];
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: regmirror-bench-loadgen\r\n%s\r\n", path,
                   c->port, extra_headers);
  if (n <= 0 || n >= (int)sizeof req) die("request too long");
  issued++;
  c->t_sent = now();
  c->st = S_HEADERS;
  c->line_len = 0;
  c->got_body = 0;
  if (send(c->fd, req, n, MSG_NOSIGNAL) != n) {
    errors++;
    close_conn(c);
  }
}

static void finish_response(struct conn *c) {
  double t = now();
  completed++;
  if (c->status != 200) errors++;
  if (!c->got_body) push(&s_ttfb, (c->t_headers - c->t_sent) * 1e3); /* empty body: headers are all */
  push(&s_total, (t - c->t_sent) * 1e3);
  c->st = S_IDLE;
  if (c->close_after) close_conn(c);
  send_request(c);
}

/* Whether the header line starting at h (ending at CRLF) contains token, case-insensitively. */
static int line_has(const char *h, const char *token) {
  const char *end = strstr(h, "\r\n");
  const char *at = strcasestr(h, token);
  return at != NULL && (end == NULL || at < end);
}

/* Parses the header block in c->line; returns the body framing state to continue in. */
static enum state parse_headers(struct conn *c) {
  c->status = 0;
  c->close_after = 0;
  sscanf(c->line, "HTTP/1.%*d %d", &c->status);
  long long len = -1;
  int chunked = 0;
  for (char *p = strstr(c->line, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n")) {
    char *h = p + 2;
    if (strncasecmp(h, "content-length:", 15) == 0) len = atoll(h + 15);
    else if (strncasecmp(h, "transfer-encoding:", 18) == 0) chunked = line_has(h, "chunked");
    else if (strncasecmp(h, "connection:", 11) == 0) c->close_after = line_has(h, "close");
  }
  if (chunked) return S_CHUNK_SIZE;
  if (len >= 0) {
    c->remain = len;
    return S_BODY_LEN;
  }
  c->close_after = 1;
  return S_BODY_EOF;
}

static void body_seen(struct conn *c, long long n) {
  /* Recorded now, not at completion: with 64 streams of 64 MiB few responses end within the window. */
  if (n > 0 && !c->got_body) {
    c->got_body = 1;
    c->t_body = now();
    push(&s_ttfb, (c->t_body - c->t_sent) * 1e3);
  }
  body_bytes += n;
}

/* Feeds received bytes through the response state machine; may finish several states. */
static void consume(struct conn *c, char *buf, size_t n) {
  while (n > 0 || (c->st == S_BODY_LEN && c->remain == 0)) {
    switch (c->st) {
      case S_IDLE: /* bytes nobody asked for: the server is confused; count and drop */
        errors++;
        close_conn(c);
        return;
      case S_HEADERS: {
        if (c->line_len == 0) c->t_headers = now();
        size_t take = n < HDR_MAX - 1 - c->line_len ? n : HDR_MAX - 1 - c->line_len;
        memcpy(c->line + c->line_len, buf, take);
        size_t before = c->line_len;
        c->line_len += take;
        c->line[c->line_len] = 0;
        char *end = strstr(c->line, "\r\n\r\n");
        if (!end) {
          if (c->line_len >= HDR_MAX - 1) {
            errors++;
            close_conn(c);
            return;
          }
          return;
        }
        size_t used = (size_t)(end + 4 - c->line) - before;
        push(&s_headers, (c->t_headers - c->t_sent) * 1e3);
        buf += used;
        n -= used;
        c->st = parse_headers(c);
        c->line_len = 0;
        break;
      }
      case S_BODY_LEN: {
        long long take = (long long)n < c->remain ? (long long)n : c->remain;
        body_seen(c, take);
        c->remain -= take;
        buf += take;
        n -= take;
        if (c->remain == 0) {
          finish_response(c);
          if (n > 0) { /* nothing may follow a response we did not ask for yet */
            errors++;
            close_conn(c);
          }
          return;
        }
        break;
      }
      case S_BODY_EOF:
        body_seen(c, n);
        return;
      case S_CHUNK_SIZE:
      case S_TRAILER: {
        char *nl = memchr(buf, '\n', n);
        size_t take = nl ? (size_t)(nl - buf) + 1 : n;
        if (c->line_len + take >= HDR_MAX) {
          errors++;
          close_conn(c);
          return;
        }
        memcpy(c->line + c->line_len, buf, take);
        c->line_len += take;
        c->line[c->line_len] = 0;
        buf += take;
        n -= take;
        if (!nl) break;
        if (c->st == S_CHUNK_SIZE) {
          c->remain = strtoll(c->line, NULL, 16);
          c->st = c->remain == 0 ? S_TRAILER : S_CHUNK_DATA;
        } else if (c->line_len <= 2) { /* the empty line that ends the trailers */
          c->line_len = 0;
          finish_response(c);
          return;
        }
        c->line_len = 0;
        break;
      }
      case S_CHUNK_DATA: {
        long long take = (long long)n < c->remain ? (long long)n : c->remain;
        body_seen(c, take);
        c->remain -= take;
        buf += take;
        n -= take;
        if (c->remain == 0) c->st = S_CHUNK_CRLF;
        break;
      }
      case S_CHUNK_CRLF: { /* the CRLF after chunk data: reuse the size-line reader */
        c->st = S_CHUNK_SIZE;
        c->line_len = 0;
        char *nl = memchr(buf, '\n', n);
        if (!nl) return; /* bare "\r" this read: the next read ends the line, harmlessly */
        n -= (size_t)(nl - buf) + 1;
        buf = nl + 1;
        break;
      }
    }
  }
}

static void on_readable(struct conn *c) {
  ssize_t r = recv(c->fd, scratch, SCRATCH, 0);
  if (r > 0) {
    consume(c, scratch, (size_t)r);
    return;
  }
  if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
  /* EOF or error: a body delimited by close ends here; anything else in flight is broken. */
  if (c->st == S_BODY_EOF) {
    finish_response(c); /* close_after is set: it closes, then reconnects if more is wanted */
    return;
  }
  if (c->st != S_IDLE) errors++;
  close_conn(c);
  send_request(c);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void percentiles(FILE *out, const char *name, struct samples *s) {
  qsort(s->v, s->n, sizeof(double), cmp_double);
  double q[4] = {0.5, 0.9, 0.99, 1.0};
  const char *k[4] = {"p50", "p90", "p99", "max"};
  fprintf(out, "\"%s\":{", name);
  for (int i = 0; i < 4; i++) {
    double v = 0;
    if (s->n) {
      size_t idx = (size_t)(q[i] * (double)(s->n - 1) + 0.5);
      v = s->v[idx];
    }
    fprintf(out, "%s\"%s\":%.3f", i ? "," : "", k[i], v);
  }
  fprintf(out, ",\"min\":%.3f}", s->n ? s->v[0] : 0.0);
}

static void usage(void) {
  fprintf(stderr, "usage: loadgen -p PORT[,PORT...] -c CONNS (-n COUNT | -d SECONDS) [-t TIMEOUT] [-H header]... PATH...\n");
  exit(2);
}

int main(int argc, char **argv) {
  int opt;
  while ((opt = getopt(argc, argv, "p:c:n:d:t:H:")) != -1) {
    switch (opt) {
      case 'p':
        for (char *tok = strtok(optarg, ","); tok; tok = strtok(NULL, ",")) {
          if (nports >= MAX_PORTS) usage();
          ports[nports++] = atoi(tok);
        }
        break;
      case 'c': nconns = atoi(optarg); break;
      case 'n': count_limit = atoll(optarg); break;
      case 'd': duration = atof(optarg); break;
      case 't': timeout_s = atof(optarg); break;
      case 'H':
        if (strlen(extra_headers) + strlen(optarg) + 3 >= sizeof extra_headers) usage();
        strcat(extra_headers, optarg);
        strcat(extra_headers, "\r\n");
        break;
      default: usage();
    }
  }
  npaths = argc - optind;
  paths = argv + optind;
  int bad_port = nports == 0;
  for (int i = 0; i < nports; i++) bad_port |= ports[i] <= 0;
  if (bad_port || nconns <= 0 || npaths <= 0 || (count_limit < 0) == (duration < 0)) usage();

  scratch = malloc(SCRATCH);
  conns = calloc((size_t)nconns, sizeof *conns);
  epfd = epoll_create1(0);
  if (!scratch || !conns || epfd < 0) die("setup");
  for (int i = 0; i < nconns; i++) {
    conns[i].port = ports[i % nports];
    open_conn(&conns[i]);
  }

  t_start = now();
  t_stop = duration >= 0 ? t_start + duration : t_start + timeout_s;
  for (int i = 0; i < nconns; i++) send_request(&conns[i]);

  struct epoll_event evs[256];
  for (;;) {
    double t = now();
    if (count_limit >= 0 && completed >= count_limit) break;
    if (t >= t_stop) {
      timed_out = count_limit >= 0;
      break;
    }
    int ms = (int)((t_stop - t) * 1e3) + 1;
    int n = epoll_wait(epfd, evs, 256, ms > 100 ? 100 : ms);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (c->fd >= 0) on_readable(c);
    }
    /* Connections left idle and closed (count mode) have nothing more to do. */
    if (count_limit >= 0 && issued >= count_limit) {
      int busy = 0;
      for (int i = 0; i < nconns; i++) busy |= conns[i].st != S_IDLE;
      if (!busy) break;
    }
  }
  double elapsed = duration >= 0 ? duration : now() - t_start;

  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
  printf("{\"conns\":%d,\"requests\":%lld,\"errors\":%lld,\"bytes\":%lld,\"elapsed_s\":%.4f,\"mb_per_s\":%.1f,"
         "\"req_per_s\":%.1f,\"client_cpu_s\":%.3f,\"timed_out\":%s,",
         nconns, completed, errors, body_bytes, elapsed, body_bytes / elapsed / 1e6, completed / elapsed, cpu,
         timed_out ? "true" : "false");
  percentiles(stdout, "headers_ms", &s_headers);
  putchar(',');
  percentiles(stdout, "ttfb_ms", &s_ttfb);
  putchar(',');
  percentiles(stdout, "total_ms", &s_total);
  printf("}\n");
  return 0;
}
