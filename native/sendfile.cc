// sendfile(2) for cached blobs: the kernel copies file pages straight into the socket, so a warm
// blob costs neither a read into user space nor a write out of it (see docs/performance.md).
//
// Each transfer runs on a thread of its own, not libuv's pool: a slow client would otherwise hold
// one of its four threads and stall every file operation of the process. The JavaScript side
// bounds how many run at once (cache.sendfileThreads), and the poll timeout (limits.stallTimeout)
// ends a transfer whose client takes nothing. Running out of threads or descriptors (a pids
// limit, EMFILE) is an answer, not an abort: start() returns undefined and JavaScript sends the
// bytes itself. Hence pthread_create, which returns an error, and not std::thread, which throws
// (std::terminate under -fno-exceptions). The thread works on a
// dup() of the socket, so if Node closes its descriptor meanwhile the number cannot be reused
// under us; cancel() shuts the socket down, which wakes the thread at once. The job and its dup
// are released on the main thread, after the callback, so cancel() never touches either late.

#include <node_api.h>

#include <atomic>
#include <cerrno>
#include <new>

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <poll.h>
#include <pthread.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

struct Job {
  int out;
  int in;
  off_t offset;
  size_t left;
  int timeout_ms;
  int error = 0;
  size_t sent = 0;
  std::atomic<bool> cancelled{false};
  napi_threadsafe_function done;
};

void Run(Job* job) {
  while (job->left > 0 && !job->cancelled.load()) {
    ssize_t n = sendfile(job->out, job->in, &job->offset, job->left);
    if (n > 0) {
      job->left -= static_cast<size_t>(n);
      job->sent += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) {
      job->error = EIO;  // the file is shorter than promised
      break;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      job->error = errno;
      break;
    }
    pollfd p{job->out, POLLOUT, 0};
    int r = poll(&p, 1, job->timeout_ms);
    if (r == 0) {
      job->error = ETIMEDOUT;  // the client stopped reading
      break;
    }
    if (r < 0 && errno != EINTR) {
      job->error = errno;
      break;
    }
  }
  if (job->error == 0 && job->cancelled.load()) job->error = ECANCELED;
  // Once queued, the job belongs to the main thread (CallJs deletes it): keep what we still need.
  napi_threadsafe_function done = job->done;
  napi_call_threadsafe_function(done, job, napi_tsfn_blocking);
  napi_release_threadsafe_function(done, napi_tsfn_release);
}

void* RunThread(void* job) {
  Run(static_cast<Job*>(job));
  return nullptr;
}

/** A detached thread with a small stack (it only loops over sendfile and poll); false if none. */
bool StartThread(Job* job) {
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) != 0) return false;
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 128 * 1024);
  pthread_t thread;
  int rc = pthread_create(&thread, &attr, RunThread, job);
  pthread_attr_destroy(&attr);
  return rc == 0;
}

napi_value Undefined(napi_env env) {
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  return undefined;
}

void CallJs(napi_env env, napi_value callback, void* /*context*/, void* data) {
  Job* job = static_cast<Job*>(data);
  // Closed here, on the main thread, not in Run: cancel() (also main thread) may shutdown() the
  // descriptor until the callback has run, and must never hit a number reused meanwhile.
  close(job->out);
  if (env != nullptr) {
    napi_value args[2], undefined;
    napi_create_int32(env, job->error, &args[0]);
    napi_create_double(env, static_cast<double>(job->sent), &args[1]);
    napi_get_undefined(env, &undefined);
    napi_call_function(env, undefined, callback, 2, args, nullptr);
  }
  delete job;
}

napi_value Throw(napi_env env, const char* message) {
  napi_throw_error(env, nullptr, message);
  return nullptr;
}

// start(socketFd, fileFd, offset, count, timeoutMs, callback(errno, sent)) -> handle, or
// undefined when no descriptor or thread could be had (the callback is then never called).
napi_value Start(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  if (argc != 6) return Throw(env, "start takes 6 arguments");
  int32_t sock, file, timeout;
  double offset, count;
  if (napi_get_value_int32(env, argv[0], &sock) != napi_ok || napi_get_value_int32(env, argv[1], &file) != napi_ok ||
      napi_get_value_double(env, argv[2], &offset) != napi_ok || napi_get_value_double(env, argv[3], &count) != napi_ok ||
      napi_get_value_int32(env, argv[4], &timeout) != napi_ok) {
    return Throw(env, "bad arguments");
  }
  int out = dup(sock);
  if (out < 0) return Undefined(env);
  Job* job = new (std::nothrow) Job();
  if (job == nullptr) {
    close(out);
    return Undefined(env);
  }
  job->out = out;
  job->in = file;
  job->offset = static_cast<off_t>(offset);
  job->left = static_cast<size_t>(count);
  job->timeout_ms = timeout;
  napi_value name;
  napi_create_string_utf8(env, "regmirror-sendfile", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[5], nullptr, name, 0, 1, nullptr, nullptr, nullptr, CallJs,
                                      &job->done) != napi_ok) {
    close(out);
    delete job;
    return Undefined(env);
  }
  if (!StartThread(job)) {
    // Nothing was queued, so releasing the last reference just finalizes the callback.
    napi_release_threadsafe_function(job->done, napi_tsfn_release);
    close(out);
    delete job;
    return Undefined(env);
  }
  napi_value handle;
  napi_create_external(env, job, nullptr, nullptr, &handle);
  return handle;
}

// cancel(handle): only before the callback has run (the JS side guarantees it).
napi_value Cancel(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr);
  void* data = nullptr;
  if (argc != 1 || napi_get_value_external(env, argv[0], &data) != napi_ok) return Throw(env, "bad handle");
  Job* job = static_cast<Job*>(data);
  job->cancelled.store(true);
  shutdown(job->out, SHUT_RDWR);
  return nullptr;
}

// trim(): hands the pages glibc's malloc holds free back to the kernel (malloc_trim(3)); true if
// it released any. Not about sendfile, but this is the one addon: a fill's buffers are
// malloc'd, and once freed glibc keeps them resident (it only gives back the top of its heap),
// tens of MB per worker after a few 64 MiB fills (docs/workers.md). Elsewhere than glibc, false.
napi_value Trim(napi_env env, napi_callback_info) {
  int released = 0;
#if defined(__GLIBC__)
  released = malloc_trim(0);
#endif
  napi_value out;
  napi_get_boolean(env, released != 0, &out);
  return out;
}

napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"start", nullptr, Start, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"cancel", nullptr, Cancel, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"trim", nullptr, Trim, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  napi_define_properties(env, exports, 3, props);
  return exports;
}

}  // namespace

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
