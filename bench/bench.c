/* wmlicense benchmark: for N licenses (default 10,000, 100,000 and 1,000,000; the arguments may
   choose other sizes) it builds a store, then times a full backup and a full restore, measures
   their peak memory, the time the starting call takes to return, the time from a cancel to END,
   and compares with the sqlite3 command-line tool doing a .backup and a .dump + .read of the same
   database. It prints figures and the targets next to them; it asserts nothing about time (the
   exit status is non-zero only when an operation fails).

   Every measured operation runs in its own fork()ed child that does only that operation, so
   wait4() gives its peak RSS (ru_maxrss) and CPU time. The parent never starts a restorer (it
   would start the library's worker threads, which a fork()ed child does not inherit). */
#include "wmlicense.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/vfs.h>
#endif

#define BATCH 10000u
#define CALL_SAMPLES 20
#define SMALL_STORE 1000u
#define MAX_PROGRESS 4096
#define PATH_LEN 1024

/* Targets (for 1,000,000 licenses where a size is involved). Printed, never asserted. */
#define TARGET_BACKUP_S 3.0
#define TARGET_RESTORE_S 6.0
#define TARGET_PEAK_MIB 64.0
#define TARGET_CALL_US 100.0
#define TARGET_CANCEL_MS 100.0
#define TARGET_N 1000000ull

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* out = a + b + c; paths are short (the scratch directory is checked), so overflow is fatal. */
static void cat3(char *out, size_t len, const char *a, const char *b, const char *c) {
  size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
  if (la + lb + lc + 1 > len) {
    fprintf(stderr, "path too long: %s%s%s\n", a, b, c);
    exit(1);
  }
  memcpy(out, a, la);
  memcpy(out + la, b, lb);
  memcpy(out + la + lb, c, lc + 1);
}

static void sleep_s(double s) {
  struct timespec ts;
  if (s <= 0) return;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* ---------------------------------------------------------------------------------------------
   Events of one operation, recorded by the callback (on a library worker thread). The main
   thread reads them after wm_backup_restorer_wait() returns, which orders the accesses. */
typedef struct {
  double begin, connecting, disconnecting, end;
  int progress_n;
  double progress_t[MAX_PROGRESS];
  uint64_t progress_done[MAX_PROGRESS];
  int ends, restricted;
  wm_hresult hr;
  uint64_t processed, total, skipped;
  char message[256];
} op_events;

static void on_event(const wm_event *e, void *context) {
  op_events *ev = context;
  double t = now_s();
  switch (e->status) {
    case WM_STATUS_BACKUPRESTORE_BEGIN: ev->begin = t; break;
    case WM_STATUS_BACKUPRESTORE_CONNECTING: ev->connecting = t; break;
    case WM_STATUS_BACKUPRESTORE_DISCONNECTING: ev->disconnecting = t; break;
    case WM_STATUS_RESTRICTED_LICENSE: ev->restricted++; break;
    case WM_STATUS_BACKUPRESTORE_PROGRESS:
      if (ev->progress_n < MAX_PROGRESS) {
        ev->progress_t[ev->progress_n] = t;
        ev->progress_done[ev->progress_n] = e->processed;
        ev->progress_n++;
      }
      break;
    case WM_STATUS_BACKUPRESTORE_END:
      ev->end = t;
      ev->ends++;
      ev->hr = e->hr;
      ev->processed = e->processed;
      ev->total = e->total;
      ev->skipped = e->skipped;
      snprintf(ev->message, sizeof ev->message, "%s", e->message ? e->message : "");
      break;
    default: break;
  }
}

/* ---------------------------------------------------------------------------------------------
   What a child reports back through a pipe. */
typedef struct {
  int ok;
  char error[512];
  double seconds;   /* build: put_many loop; backup/restore: call -> END */
  double call_us;   /* time the starting call took to return */
  /* phases (seconds from the call) */
  double t_begin, t_connecting, t_disconnecting, t_stream_end_est, t_end;
  /* cancel runs */
  double cancel_delay_ms, cancel_to_end_ms;
  int finished_before_cancel;
  wm_hresult end_hr;
  char leftovers[256];
  uint64_t count;
  /* call-return samples */
  int n_backup_calls, n_restore_calls;
  double backup_calls_us[CALL_SAMPLES], restore_calls_us[CALL_SAMPLES];
} child_result;

static void fail_msg(child_result *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (r->ok || !r->error[0]) vsnprintf(r->error, sizeof r->error, fmt, ap);
  va_end(ap);
  r->ok = 0;
}

static int check_hr(child_result *r, const char *what, wm_hresult hr) {
  if (WM_SUCCEEDED(hr)) return 1;
  fail_msg(r, "%s failed: 0x%08x %s: %s", what, (unsigned)hr, wm_hresult_message(hr),
           wm_last_error_message());
  return 0;
}

static int set_prop(child_result *r, wm_backup_restorer *br, const char *name, const char *value) {
  return check_hr(r, name,
                  wm_backup_restorer_set_prop(br, name, WM_TYPE_STRING, (const uint8_t *)value,
                                              (uint32_t)strlen(value)));
}

typedef void (*child_fn)(const void *arg, child_result *r);

/* Runs fn in a fork()ed child; returns 0 when the child ran and exited normally. */
static int run_child(child_fn fn, const void *arg, child_result *out, struct rusage *ru) {
  int fds[2];
  pid_t pid;
  int status = 0;
  size_t got = 0;
  memset(out, 0, sizeof *out);
  memset(ru, 0, sizeof *ru);
  fflush(NULL);
  if (pipe(fds) != 0) {
    snprintf(out->error, sizeof out->error, "pipe: %s", strerror(errno));
    return -1;
  }
  pid = fork();
  if (pid < 0) {
    snprintf(out->error, sizeof out->error, "fork: %s", strerror(errno));
    close(fds[0]);
    close(fds[1]);
    return -1;
  }
  if (pid == 0) {
    static child_result r;
    const char *p = (const char *)&r;
    size_t left = sizeof r;
    close(fds[0]);
    memset(&r, 0, sizeof r);
    r.ok = 1;
    fn(arg, &r);
    while (left > 0) {
      ssize_t n = write(fds[1], p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) _exit(3);
      p += n;
      left -= (size_t)n;
    }
    _exit(0);
  }
  close(fds[1]);
  while (got < sizeof *out) {
    ssize_t n = read(fds[0], (char *)out + got, sizeof *out - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
  }
  close(fds[0]);
  while (wait4(pid, &status, 0, ru) < 0) {
    if (errno != EINTR) {
      snprintf(out->error, sizeof out->error, "wait4: %s", strerror(errno));
      return -1;
    }
  }
  if (got != sizeof *out || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    memset(out, 0, sizeof *out);
    snprintf(out->error, sizeof out->error, "child died (status 0x%x, %zu bytes of result)",
             (unsigned)status, got);
    return -1;
  }
  return 0;
}

static double maxrss_mib(const struct rusage *ru) { return (double)ru->ru_maxrss / 1024.0; }
static double cpu_s(const struct rusage *ru) {
  return (double)ru->ru_utime.tv_sec + (double)ru->ru_utime.tv_usec / 1e6 +
         (double)ru->ru_stime.tv_sec + (double)ru->ru_stime.tv_usec / 1e6;
}

/* ---------------------------------------------------------------------------------------------
   Child operations. */

typedef struct {
  uint64_t n;
  char store[PATH_LEN];
} build_arg;

static uint64_t rng_next(uint64_t *s) { /* xorshift64* */
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 0x2545F4914F6CDD1Dull;
}

/* Random 16..32-byte key IDs (deterministic per N), 16-byte content keys, short titles. */
static void child_build(const void *argp, child_result *r) {
  const build_arg *a = argp;
  wm_license *lic = calloc(BATCH, sizeof *lic);
  uint8_t *kid = malloc((size_t)BATCH * 32);
  uint8_t *key = malloc((size_t)BATCH * 16);
  char *title = malloc((size_t)BATCH * 24);
  wm_license_store *store = NULL;
  uint64_t seed = 0x9E3779B97F4A7C15ull ^ a->n, done = 0, count = 0;
  double t0;
  if (!lic || !kid || !key || !title) {
    fail_msg(r, "out of memory");
    goto out;
  }
  if (!check_hr(r, "wm_license_store_open", wm_license_store_open(a->store, &store))) goto out;
  t0 = now_s();
  while (done < a->n) {
    size_t m = (size_t)((a->n - done) < BATCH ? (a->n - done) : BATCH), i, j;
    for (i = 0; i < m; i++) {
      uint64_t v = rng_next(&seed);
      size_t kl = 16 + (size_t)(v % 17);
      for (j = 0; j < 32; j += 8) {
        uint64_t w = rng_next(&seed);
        memcpy(kid + i * 32 + j, &w, 8);
      }
      v = rng_next(&seed);
      memcpy(key + i * 16, &v, 8);
      v = rng_next(&seed);
      memcpy(key + i * 16 + 8, &v, 8);
      snprintf(title + i * 24, 24, "Track %llu", (unsigned long long)(done + i));
      lic[i].key_id = kid + i * 32;
      lic[i].key_id_len = kl;
      lic[i].content_key = key + i * 16;
      lic[i].content_key_len = 16;
      lic[i].title = title + i * 24;
      lic[i].rights = WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP;
      lic[i].play_count = -1;
      lic[i].begin_date = 0;
      lic[i].expiration_date = 0;
      lic[i].issued_at = 1700000000;
    }
    if (!check_hr(r, "wm_license_store_put_many", wm_license_store_put_many(store, lic, m))) goto out;
    done += m;
  }
  r->seconds = now_s() - t0;
  if (!check_hr(r, "wm_license_store_count", wm_license_store_count(store, &count))) goto out;
  r->count = count;
  if (count != a->n)
    fail_msg(r, "store holds %llu licenses, expected %llu", (unsigned long long)count,
             (unsigned long long)a->n);
out:
  wm_license_store_close(store);
  free(lic);
  free(kid);
  free(key);
  free(title);
}

static void child_count(const void *argp, child_result *r) {
  const char *dir = argp;
  wm_license_store *store = NULL;
  if (check_hr(r, "wm_license_store_open", wm_license_store_open(dir, &store)))
    check_hr(r, "wm_license_store_count", wm_license_store_count(store, &r->count));
  wm_license_store_close(store);
}

typedef struct {
  int restore;             /* 0 backup, 1 restore */
  uint64_t n;              /* expected counts */
  char store[PATH_LEN];    /* StorePath */
  char path[PATH_LEN];     /* BackupPath / RestorePath */
  int cancel;              /* cancel cancel_after_s after the call */
  double cancel_after_s;
  char watch_dir[PATH_LEN]; /* cancel runs: directory to check for leftovers */
} op_arg;

/* Estimates when the last license was streamed: from the last periodic PROGRESS (the last
   PROGRESS of all is the one sent after the work, right before END) at the rate between the
   last two periodic ones. 0 when there are too few. */
static double stream_end_estimate(const op_events *ev, uint64_t total) {
  int k = ev->progress_n - 2;
  double rate, t;
  if (k < 1 || ev->progress_done[k] <= ev->progress_done[k - 1]) return 0;
  rate = (double)(ev->progress_done[k] - ev->progress_done[k - 1]) /
         (ev->progress_t[k] - ev->progress_t[k - 1]);
  t = ev->progress_t[k] + (double)(total - ev->progress_done[k]) / rate;
  return t < ev->end ? t : ev->end;
}

/* The names in dir (via ls -A), except the backup directory's lock file and the pending device
   identity a cancelled restore into a new store keeps for its retry (by design). */
static void list_leftovers(const char *dir, char *out, size_t len) {
  char cmd[PATH_LEN * 2];
  FILE *p;
  size_t used = 0;
  snprintf(cmd, sizeof cmd, "ls -A '%s' 2>/dev/null", dir);
  out[0] = 0;
  p = popen(cmd, "r");
  if (!p) return;
  while (fgets(cmd, sizeof cmd, p)) {
    cmd[strcspn(cmd, "\n")] = 0;
    if (strcmp(cmd, ".licenses.wmlb.lock") == 0) continue;
    if (strlen(cmd) > 8 && strcmp(cmd + strlen(cmd) - 8, ".pending") == 0) continue;
    used += (size_t)snprintf(out + used, used < len ? len - used : 0, "%s%s", used ? " " : "", cmd);
    if (used >= len) break;
  }
  pclose(p);
}

static void child_op(const void *argp, child_result *r) {
  const op_arg *a = argp;
  static op_events ev;
  wm_backup_restorer *br = NULL;
  wm_hresult hr;
  double t0, t1;
  memset(&ev, 0, sizeof ev);
  if (!check_hr(r, "wm_backup_restorer_create", wm_backup_restorer_create(on_event, &ev, &br))) return;
  if (!set_prop(r, br, WM_PROP_STORE_PATH, a->store) ||
      !set_prop(r, br, a->restore ? WM_PROP_RESTORE_PATH : WM_PROP_BACKUP_PATH, a->path))
    goto out;
  t0 = now_s();
  hr = a->restore ? wm_backup_restorer_restore(br, WM_RESTORE_INDIVIDUALIZE)
                  : wm_backup_restorer_backup(br, WM_BACKUP_OVERWRITE);
  t1 = now_s();
  if (!check_hr(r, a->restore ? "wm_backup_restorer_restore" : "wm_backup_restorer_backup", hr)) goto out;
  r->call_us = (t1 - t0) * 1e6;
  if (a->cancel) {
    double tc;
    sleep_s(a->cancel_after_s - (now_s() - t0));
    tc = now_s();
    hr = a->restore ? wm_backup_restorer_cancel_restore(br) : wm_backup_restorer_cancel_backup(br);
    r->cancel_delay_ms = (tc - t0) * 1e3;
    if (!check_hr(r, "cancel", hr)) goto out;
    wm_backup_restorer_wait(br, WM_INFINITE);
    r->end_hr = ev.hr;
    if (hr == WM_S_FALSE) {
      r->finished_before_cancel = 1;
    } else if (ev.hr != WM_E_OPERATION_CANCELED && ev.hr != WM_S_OK) {
      fail_msg(r, "cancelled %s ended with 0x%08x %s", a->restore ? "restore" : "backup",
               (unsigned)ev.hr, ev.message);
    }
    r->cancel_to_end_ms = (ev.end - tc) * 1e3;
    list_leftovers(a->watch_dir, r->leftovers, sizeof r->leftovers);
  } else {
    wm_backup_restorer_wait(br, WM_INFINITE);
    r->seconds = ev.end - t0;
    if (ev.hr != WM_S_OK) {
      fail_msg(r, "%s END 0x%08x %s", a->restore ? "restore" : "backup", (unsigned)ev.hr, ev.message);
    } else if (ev.processed != a->n || ev.total != a->n || ev.skipped != 0) {
      fail_msg(r, "%s END counts processed %llu total %llu skipped %llu, expected %llu",
               a->restore ? "restore" : "backup", (unsigned long long)ev.processed,
               (unsigned long long)ev.total, (unsigned long long)ev.skipped, (unsigned long long)a->n);
    }
    r->t_begin = ev.begin - t0;
    r->t_connecting = ev.connecting > 0 ? ev.connecting - t0 : 0;
    r->t_disconnecting = ev.disconnecting > 0 ? ev.disconnecting - t0 : 0;
    r->t_end = ev.end - t0;
    {
      double se = stream_end_estimate(&ev, a->n);
      r->t_stream_end_est = se > 0 ? se - t0 : 0;
    }
  }
  if (ev.ends != 1) fail_msg(r, "%d END events", ev.ends);
out:
  wm_backup_restorer_destroy(br);
}

/* 20 backups (OVERWRITE) and 20 restores of a small store with one restorer; call-return times.
   The first call of each process also starts the library's worker threads. */
typedef struct {
  char store[PATH_LEN], backup[PATH_LEN], restored[PATH_LEN];
} calls_arg;

/* Times CALL_SAMPLES starting calls of one operation (each waited for); 1 on success. */
static int sample_calls(child_result *r, wm_backup_restorer *br, op_events *ev, int restore,
                        double *samples, int *count) {
  const char *what = restore ? "wm_backup_restorer_restore" : "wm_backup_restorer_backup";
  int i;
  for (i = 0; i < CALL_SAMPLES; i++) {
    double t0, t1;
    wm_hresult hr;
    memset(ev, 0, sizeof *ev);
    t0 = now_s();
    hr = restore ? wm_backup_restorer_restore(br, WM_RESTORE_INDIVIDUALIZE)
                 : wm_backup_restorer_backup(br, WM_BACKUP_OVERWRITE);
    t1 = now_s();
    if (!check_hr(r, what, hr)) return 0;
    wm_backup_restorer_wait(br, WM_INFINITE);
    if (ev->hr != WM_S_OK) {
      fail_msg(r, "small %s END 0x%08x %s", restore ? "restore" : "backup", (unsigned)ev->hr, ev->message);
      return 0;
    }
    samples[(*count)++] = (t1 - t0) * 1e6;
  }
  return 1;
}

static void child_calls(const void *argp, child_result *r) {
  const calls_arg *a = argp;
  static op_events ev;
  wm_backup_restorer *br = NULL;
  if (!check_hr(r, "wm_backup_restorer_create", wm_backup_restorer_create(on_event, &ev, &br))) return;
  if (!set_prop(r, br, WM_PROP_STORE_PATH, a->store) || !set_prop(r, br, WM_PROP_BACKUP_PATH, a->backup))
    goto out;
  if (!sample_calls(r, br, &ev, 0, r->backup_calls_us, &r->n_backup_calls)) goto out;
  if (!set_prop(r, br, WM_PROP_STORE_PATH, a->restored) || !set_prop(r, br, WM_PROP_RESTORE_PATH, a->backup))
    goto out;
  sample_calls(r, br, &ev, 1, r->restore_calls_us, &r->n_restore_calls);
out:
  wm_backup_restorer_destroy(br);
}

static void child_nothing(const void *argp, child_result *r) {
  (void)argp;
  (void)r;
}

/* ---------------------------------------------------------------------------------------------
   Helpers of the parent. */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

static void rm_rf(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static int on_path(const char *prog) {
  const char *path = getenv("PATH");
  char buf[PATH_LEN];
  while (path && *path) {
    size_t len = strcspn(path, ":");
    snprintf(buf, sizeof buf, "%.*s/%s", (int)len, path, prog);
    if (len > 0 && access(buf, X_OK) == 0) return 1;
    path += len;
    if (*path == ':') path++;
  }
  return 0;
}

/* Runs argv (stdout to out_path if given); returns wall seconds, or -1 on failure. */
static double run_timed(char *const argv[], const char *out_path, struct rusage *ru) {
  pid_t pid;
  int status = 0;
  double t0 = now_s(), t;
  fflush(NULL);
  pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (out_path) {
      int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0) _exit(126);
      close(fd);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  while (wait4(pid, &status, 0, ru) < 0)
    if (errno != EINTR) return -1;
  t = now_s() - t0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "  %s %s exited with status 0x%x\n", argv[0], argv[1] ? argv[1] : "",
            (unsigned)status);
    return -1;
  }
  return t;
}

/* The 1-minute load average, or -1 where /proc/loadavg is missing. */
static double loadavg(void) {
  FILE *f = fopen("/proc/loadavg", "r");
  double v = -1;
  if (f) {
    if (fscanf(f, "%lf", &v) != 1) v = -1;
    fclose(f);
  }
  return v;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  if (n <= 0) return 0;
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double vmax(const double *v, int n) {
  double m = 0;
  int i;
  for (i = 0; i < n; i++)
    if (v[i] > m) m = v[i];
  return m;
}

/* Max of the sorted v without one occurrence of `skip`. */
static double other_max(const double *v, int n, double skip) {
  double m = 0;
  int i, skipped = 0;
  for (i = 0; i < n; i++) {
    if (!skipped && v[i] == skip) {
      skipped = 1;
      continue;
    }
    if (v[i] > m) m = v[i];
  }
  return m;
}

static long long dir_bytes(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static void note_failure(const char *what, const child_result *r) {
  fprintf(stderr, "  FAILED %s: %s\n", what, r->error[0] ? r->error : "(no message)");
}

/* One cancelled operation. */
typedef struct {
  int ran, early;
  double after_ms, to_end_ms;
  wm_hresult hr;
} probe;

static int probe_serial;

/* Starts a backup of `store` into `path` (restore = 0) or a restore of the backup in `path` into
   a new store under `dir` (restore = 1), cancels it `after_s` after the call, and records the
   time from the cancel to END. Checks that a cancelled operation left nothing behind. Returns
   non-zero on a failure. */
static int cancel_probe(int restore, uint64_t n, const char *store_or_dir, const char *path,
                        double after_s, probe *p) {
  op_arg oa;
  child_result cr;
  struct rusage ru;
  char leaf[64];
  memset(&oa, 0, sizeof oa);
  memset(p, 0, sizeof *p);
  oa.restore = restore;
  oa.n = n;
  oa.cancel = 1;
  oa.cancel_after_s = after_s;
  snprintf(oa.path, sizeof oa.path, "%s", path);
  if (!restore) { /* a fresh backup directory per probe */
    snprintf(leaf, sizeof leaf, "-%d", ++probe_serial);
    cat3(oa.path, sizeof oa.path, path, leaf, "");
  }
  if (restore) {
    snprintf(leaf, sizeof leaf, "restored-cancelled-%d", ++probe_serial);
    cat3(oa.store, sizeof oa.store, store_or_dir, "/", leaf);
    snprintf(oa.watch_dir, sizeof oa.watch_dir, "%s", store_or_dir);
  } else {
    snprintf(oa.store, sizeof oa.store, "%s", store_or_dir);
    snprintf(oa.watch_dir, sizeof oa.watch_dir, "%s", path);
  }
  if (run_child(child_op, &oa, &cr, &ru) != 0 || !cr.ok) {
    note_failure(restore ? "cancelled restore" : "cancelled backup", &cr);
    return 1;
  }
  p->ran = 1;
  p->after_ms = cr.cancel_delay_ms;
  p->to_end_ms = cr.cancel_to_end_ms;
  p->hr = cr.end_hr;
  p->early = cr.finished_before_cancel;
  if (cr.end_hr == WM_E_OPERATION_CANCELED) {
    char *s;
    for (s = strtok(cr.leftovers, " "); s; s = strtok(NULL, " "))
      if (!restore || strstr(s, leaf))
        fprintf(stderr, "  note: the cancelled %s left %s/%s behind\n", restore ? "restore" : "backup",
                oa.watch_dir, s);
  }
  rm_rf(restore ? oa.store : oa.path);
  return 0;
}

static const char *probe_outcome(const probe *p) {
  if (!p->ran) return "not run";
  if (p->early) return "it had already ended";
  if (p->hr == WM_E_OPERATION_CANCELED) return "END: WM_E_OPERATION_CANCELED";
  if (p->hr == WM_S_OK) return "END: WM_S_OK: the cancel returned S_OK, yet the operation completed";
  return "END: other failure";
}

/* One table row. */
typedef struct {
  uint64_t n;
  int ok;
  double build_s, backup_s, restore_s, backup_mib, restore_mib, backup_cpu, restore_cpu;
  double sq_backup_s, sq_dump_s, sq_read_s, sq_backup_mib, sq_dump_mib, sq_read_mib;
  double cancel_backup_ms, cancel_restore_ms;
  probe cbk, cbk0, crs, crs0, crs_tail;
  double backup_call_us, restore_call_us;
  child_result bk, rs;
  long long db_bytes, backup_bytes;
} row;

static int fmt_cell(char *buf, size_t len, double v, const char *fmt) {
  if (v < 0) return snprintf(buf, len, "%s", "-");
  return snprintf(buf, len, fmt, v);
}

int main(int argc, char **argv) {
  static const uint64_t default_sizes[] = {10000, 100000, 1000000};
  uint64_t sizes[16];
  int nsizes = 0, i, failures = 0, have_sqlite;
  char base[PATH_LEN], home[PATH_LEN];
  const char *tmp = getenv("TMPDIR");
  row rows[16];
  child_result cr, calls;
  struct rusage ru;
  double baseline_mib;

  for (i = 1; i < argc && nsizes < 16; i++) {
    char *end = NULL;
    unsigned long long v = strtoull(argv[i], &end, 10);
    if (!end || *end || v == 0) {
      fprintf(stderr, "usage: %s [N ...]   (license counts; default 10000 100000 1000000)\n", argv[0]);
      return 2;
    }
    sizes[nsizes++] = v;
  }
  if (nsizes == 0)
    for (i = 0; i < 3; i++) sizes[nsizes++] = default_sizes[i];

  if (!tmp || !*tmp) tmp = "/tmp";
  if (strlen(tmp) > 400) {
    fprintf(stderr, "TMPDIR is too long\n");
    return 1;
  }
  cat3(base, sizeof base, tmp, "/wmlicense-bench.XXXXXX", "");
  if (!mkdtemp(base)) {
    fprintf(stderr, "mkdtemp %s: %s\n", base, strerror(errno));
    return 1;
  }
  cat3(home, sizeof home, base, "/home", "");
  mkdir(home, 0700);
  setenv("WMLICENSE_HOME", home, 1); /* the embedded service lives in $WMLICENSE_HOME/service */
  have_sqlite = on_path("sqlite3");

  printf("wmlicense %s benchmark; scratch directory %s", wm_version(), base);
#ifdef __linux__
  {
    struct statfs sf;
    if (statfs(base, &sf) == 0)
      printf(" (%s)", sf.f_type == 0x01021994 ? "tmpfs: fsync is free here" : "not tmpfs");
  }
#endif
  printf("\n%ld online CPUs, load average %.2f at the start; the machine may be shared with other "
         "work (compare wall and CPU times below)\n",
         sysconf(_SC_NPROCESSORS_ONLN), loadavg());
  if (!have_sqlite) printf("note: sqlite3 is not on PATH: the sqlite3 peer columns are skipped\n");

  run_child(child_nothing, NULL, &cr, &ru);
  baseline_mib = maxrss_mib(&ru);
  printf("peak RSS of a fork()ed child that does nothing: %.1f MiB (the floor of the peak columns)\n\n",
         baseline_mib);
  fflush(stdout);

  for (i = 0; i < nsizes; i++) {
    row *w = &rows[i];
    uint64_t n = sizes[i];
    build_arg ba;
    op_arg oa;
    char dir[PATH_LEN], src_db[PATH_LEN], bkdir[PATH_LEN], rsdir[PATH_LEN];
    memset(w, 0, sizeof *w);
    w->n = n;
    w->ok = 1;
    w->sq_backup_s = w->sq_dump_s = w->sq_read_s = -1;
    w->cancel_backup_ms = w->cancel_restore_ms = -1;
    {
      char leaf[32];
      snprintf(leaf, sizeof leaf, "/n%llu", (unsigned long long)n);
      cat3(dir, sizeof dir, base, leaf, "");
    }
    mkdir(dir, 0700);
    memset(&ba, 0, sizeof ba);
    ba.n = n;
    cat3(ba.store, sizeof ba.store, dir, "/store", "");
    cat3(src_db, sizeof src_db, ba.store, "/licenses.db", "");
    cat3(bkdir, sizeof bkdir, dir, "/backup", "");
    cat3(rsdir, sizeof rsdir, dir, "/restored", "");

    fprintf(stderr, "N=%llu: building the store...\n", (unsigned long long)n);
    if (run_child(child_build, &ba, &cr, &ru) != 0 || !cr.ok) {
      note_failure("build", &cr);
      w->ok = 0;
      failures++;
      continue;
    }
    w->build_s = cr.seconds;
    w->db_bytes = dir_bytes(src_db);

    /* full backup */
    fprintf(stderr, "N=%llu: backup...\n", (unsigned long long)n);
    memset(&oa, 0, sizeof oa);
    oa.n = n;
    snprintf(oa.store, sizeof oa.store, "%s", ba.store);
    snprintf(oa.path, sizeof oa.path, "%s", bkdir);
    if (run_child(child_op, &oa, &w->bk, &ru) != 0 || !w->bk.ok) {
      note_failure("backup", &w->bk);
      w->ok = 0;
      failures++;
      continue;
    }
    w->backup_s = w->bk.seconds;
    w->backup_mib = maxrss_mib(&ru);
    w->backup_cpu = cpu_s(&ru);
    w->backup_call_us = w->bk.call_us;
    {
      char f[PATH_LEN + 32];
      cat3(f, sizeof f, bkdir, "/licenses.wmlb", "");
      w->backup_bytes = dir_bytes(f);
    }

    /* full restore into a new store */
    fprintf(stderr, "N=%llu: restore...\n", (unsigned long long)n);
    oa.restore = 1;
    snprintf(oa.store, sizeof oa.store, "%s", rsdir);
    snprintf(oa.path, sizeof oa.path, "%s", bkdir);
    if (run_child(child_op, &oa, &w->rs, &ru) != 0 || !w->rs.ok) {
      note_failure("restore", &w->rs);
      w->ok = 0;
      failures++;
      continue;
    }
    w->restore_s = w->rs.seconds;
    w->restore_mib = maxrss_mib(&ru);
    w->restore_cpu = cpu_s(&ru);
    w->restore_call_us = w->rs.call_us;
    if (run_child(child_count, rsdir, &cr, &ru) != 0 || !cr.ok || cr.count != n) {
      fprintf(stderr, "  FAILED: the restored store holds %llu licenses, expected %llu %s\n",
              (unsigned long long)cr.count, (unsigned long long)n, cr.error);
      w->ok = 0;
      failures++;
    }
    rm_rf(rsdir);

    /* cancel ~100 ms after the start (earlier when the whole operation is faster), then the
       probes: cancel right after the call (before any license streams), and a restore cancelled
       during its final commit (only where that phase is long enough to aim at). */
    fprintf(stderr, "N=%llu: cancelled backups and restores...\n", (unsigned long long)n);
    {
      char cbk[PATH_LEN + 32];
      int bad = 0;
      cat3(cbk, sizeof cbk, dir, "/backup-cancelled", "");
      bad += cancel_probe(0, n, ba.store, cbk, w->backup_s >= 0.2 ? 0.1 : w->backup_s / 2, &w->cbk);
      bad += cancel_probe(0, n, ba.store, cbk, 0, &w->cbk0);
      bad += cancel_probe(1, n, dir, bkdir, w->restore_s >= 0.2 ? 0.1 : w->restore_s / 2, &w->crs);
      bad += cancel_probe(1, n, dir, bkdir, 0, &w->crs0);
      if (w->rs.t_stream_end_est > 0 && w->rs.t_end - w->rs.t_stream_end_est >= 0.2)
        bad += cancel_probe(1, n, dir, bkdir,
                            w->rs.t_stream_end_est + 0.5 * (w->rs.t_end - w->rs.t_stream_end_est),
                            &w->crs_tail);
      if (bad) {
        failures += bad;
        w->ok = 0;
      }
    }
    w->cancel_backup_ms = w->cbk.to_end_ms;
    w->cancel_restore_ms = w->crs.to_end_ms;

    /* the peers: the sqlite3 command-line tool on the same database */
    if (have_sqlite) {
      char copy[PATH_LEN + 16], dump[PATH_LEN + 16], empty[PATH_LEN + 16], cmd[PATH_LEN * 2];
      char *bk_argv[4], *dump_argv[4], *read_argv[4];
      struct rusage r1, r2, r3;
      fprintf(stderr, "N=%llu: sqlite3 .backup, .dump, .read...\n", (unsigned long long)n);
      cat3(copy, sizeof copy, dir, "/copy.db", "");
      cat3(dump, sizeof dump, dir, "/dump.sql", "");
      cat3(empty, sizeof empty, dir, "/empty.db", "");
      cat3(cmd, sizeof cmd, ".backup '", copy, "'");
      bk_argv[0] = "sqlite3";
      bk_argv[1] = src_db;
      bk_argv[2] = cmd;
      bk_argv[3] = NULL;
      w->sq_backup_s = run_timed(bk_argv, NULL, &r1);
      w->sq_backup_mib = maxrss_mib(&r1);
      dump_argv[0] = "sqlite3";
      dump_argv[1] = src_db;
      dump_argv[2] = ".dump";
      dump_argv[3] = NULL;
      w->sq_dump_s = run_timed(dump_argv, dump, &r2);
      w->sq_dump_mib = maxrss_mib(&r2);
      if (w->sq_dump_s >= 0) {
        char rd[PATH_LEN + 16];
        cat3(rd, sizeof rd, ".read '", dump, "'");
        read_argv[0] = "sqlite3";
        read_argv[1] = empty;
        read_argv[2] = rd;
        read_argv[3] = NULL;
        w->sq_read_s = run_timed(read_argv, NULL, &r3);
        w->sq_read_mib = maxrss_mib(&r3);
      }
      remove(copy);
      remove(dump);
      remove(empty);
    }
    rm_rf(dir); /* keep the disk use to one size at a time */
  }

  /* call-return times on a small store */
  {
    build_arg ba;
    calls_arg ca;
    memset(&ba, 0, sizeof ba);
    memset(&calls, 0, sizeof calls);
    ba.n = SMALL_STORE;
    cat3(ba.store, sizeof ba.store, base, "/small/store", "");
    snprintf(ca.store, sizeof ca.store, "%s", ba.store);
    cat3(ca.backup, sizeof ca.backup, base, "/small/backup", "");
    cat3(ca.restored, sizeof ca.restored, base, "/small/restored", "");
    fprintf(stderr, "call-return times on a store of %u licenses...\n", SMALL_STORE);
    if (run_child(child_build, &ba, &cr, &ru) != 0 || !cr.ok) {
      note_failure("small build", &cr);
      failures++;
    } else if (run_child(child_calls, &ca, &calls, &ru) != 0 || !calls.ok) {
      note_failure("call-return samples", &calls);
      failures++;
    }
  }

  /* ----- report ----- */
  printf("%9s %8s %8s %8s %8s %8s | %8s %6s %9s %6s | %8s %8s\n", "", "build", "backup", "restore",
         "backup", "restore", "sqlite3", "ratio", "sqlite3", "ratio", "cancel->", "cancel->");
  printf("%9s %8s %8s %8s %8s %8s | %8s %6s %9s %6s | %8s %8s\n", "N", "s", "s", "s", "peak MiB",
         "peak MiB", ".backup s", "", "dump+read", "", "END ms bk", "END ms rs");
  for (i = 0; i < nsizes; i++) {
    row *w = &rows[i];
    char c[12][32];
    double sq_dr = (w->sq_dump_s >= 0 && w->sq_read_s >= 0) ? w->sq_dump_s + w->sq_read_s : -1;
    if (!w->ok && w->backup_s == 0) {
      printf("%9llu  FAILED (see messages above)\n", (unsigned long long)w->n);
      continue;
    }
    fmt_cell(c[0], 32, w->build_s, "%.2f");
    fmt_cell(c[1], 32, w->backup_s, "%.3f");
    fmt_cell(c[2], 32, w->restore_s, "%.3f");
    fmt_cell(c[3], 32, w->backup_mib, "%.1f");
    fmt_cell(c[4], 32, w->restore_mib, "%.1f");
    fmt_cell(c[5], 32, w->sq_backup_s, "%.3f");
    fmt_cell(c[6], 32, w->sq_backup_s > 0 ? w->backup_s / w->sq_backup_s : -1, "%.2fx");
    fmt_cell(c[7], 32, sq_dr, "%.3f");
    fmt_cell(c[8], 32, sq_dr > 0 ? w->restore_s / sq_dr : -1, "%.2fx");
    fmt_cell(c[9], 32, w->cancel_backup_ms, "%.1f");
    fmt_cell(c[10], 32, w->cancel_restore_ms, "%.1f");
    if (w->cbk.early) snprintf(c[9], 32, "done%s", "");
    if (w->crs.early) snprintf(c[10], 32, "done%s", "");
    printf("%9llu %8s %8s %8s %8s %8s | %8s %6s %9s %6s | %8s %8s%s\n", (unsigned long long)w->n,
           c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10],
           w->ok ? "" : "  (a check failed, see above)");
  }

  printf("\ndetails per N:\n");
  for (i = 0; i < nsizes; i++) {
    row *w = &rows[i];
    if (w->backup_s == 0) continue;
    printf("  N=%llu: database %.1f MiB, backup file %.1f MiB\n", (unsigned long long)w->n,
           (double)w->db_bytes / 1048576.0, (double)w->backup_bytes / 1048576.0);
    printf("    backup : %.3f s wall, %.3f s CPU (user+sys, all threads); BEGIN at %.1f ms",
           w->backup_s, w->backup_cpu, w->bk.t_begin * 1e3);
    if (w->bk.t_stream_end_est > 0)
      printf(", licenses streamed by ~%.3f s (extrapolated from PROGRESS), then %.3f s to END "
             "(last chunk, fsync, rename, directory fsync)",
             w->bk.t_stream_end_est, w->bk.t_end - w->bk.t_stream_end_est);
    printf("\n");
    if (w->restore_s > 0) {
      printf("    restore: %.3f s wall, %.3f s CPU (user+sys, all threads); BEGIN at %.1f ms, "
             "CONNECTING at %.1f ms, grant %.1f ms (CONNECTING->DISCONNECTING)",
             w->restore_s, w->restore_cpu, w->rs.t_begin * 1e3, w->rs.t_connecting * 1e3,
             (w->rs.t_disconnecting - w->rs.t_connecting) * 1e3);
      if (w->rs.t_stream_end_est > 0)
        printf(", licenses imported by ~%.3f s (extrapolated from PROGRESS), then %.3f s to END "
               "(commit, close with checkpoint, rename)",
               w->rs.t_stream_end_est, w->rs.t_end - w->rs.t_stream_end_est);
      printf("\n");
    }
    if (w->sq_backup_s >= 0)
      printf("    sqlite3: .backup %.3f s (%.1f MiB peak), .dump %.3f s (%.1f MiB), .read %.3f s "
             "(%.1f MiB)\n",
             w->sq_backup_s, w->sq_backup_mib, w->sq_dump_s, w->sq_dump_mib, w->sq_read_s,
             w->sq_read_mib);
    {
      const struct { const char *what; const probe *p; } pr[] = {
        {"backup,  cancelled", &w->cbk}, {"backup,  cancelled", &w->cbk0},
        {"restore, cancelled", &w->crs}, {"restore, cancelled", &w->crs0},
        {"restore, cancelled late (aimed at its final commit)", &w->crs_tail}};
      size_t k;
      for (k = 0; k < sizeof pr / sizeof pr[0]; k++) {
        if (!pr[k].p->ran) continue;
        if (pr[k].p->early)
          printf("    cancel : %s %7.1f ms after the call: too late, %s\n", pr[k].what,
                 pr[k].p->after_ms, probe_outcome(pr[k].p));
        else
          printf("    cancel : %s %7.1f ms after the call: END %7.1f ms after the cancel (%s)\n",
                 pr[k].what, pr[k].p->after_ms, pr[k].p->to_end_ms, probe_outcome(pr[k].p));
      }
    }
  }

  printf("\ntime for the starting call to return:\n");
  if (calls.n_backup_calls > 0) {
    double first_b = calls.backup_calls_us[0], first_r = calls.restore_calls_us[0];
    int j;
    printf("  samples in call order (us):\n    backup :");
    for (j = 0; j < calls.n_backup_calls; j++) printf(" %.0f", calls.backup_calls_us[j]);
    printf("\n    restore:");
    for (j = 0; j < calls.n_restore_calls; j++) printf(" %.0f", calls.restore_calls_us[j]);
    printf("\n");
    int nb = calls.n_backup_calls, nr = calls.n_restore_calls;
    double mb = median(calls.backup_calls_us, nb), xb = vmax(calls.backup_calls_us, nb);
    double mr = median(calls.restore_calls_us, nr), xr = vmax(calls.restore_calls_us, nr);
    printf("  store of %u licenses, one restorer, %d sequential calls each (the first call of a "
           "process also starts the library's worker threads):\n",
           SMALL_STORE, nb);
    printf("    wm_backup_restorer_backup : median %7.1f us, max %7.1f us, first %7.1f us, "
           "max of the other %d %7.1f us\n",
           mb, xb, first_b, nb - 1, other_max(calls.backup_calls_us, nb, first_b));
    printf("    wm_backup_restorer_restore: median %7.1f us, max %7.1f us, first %7.1f us, "
           "max of the other %d %7.1f us\n",
           mr, xr, first_r, nr - 1, other_max(calls.restore_calls_us, nr, first_r));
  }
  {
    double v[32];
    int k = 0;
    for (i = 0; i < nsizes; i++) {
      if (rows[i].backup_call_us > 0) v[k++] = rows[i].backup_call_us;
      if (rows[i].restore_call_us > 0) v[k++] = rows[i].restore_call_us;
    }
    if (k > 0) {
      double mx = vmax(v, k);
      printf("  the %d starting calls of the rows above (each the first call of a fresh process): "
             "median %.1f us, max %.1f us\n",
             k, median(v, k), mx);
    }
  }

  printf("\ntargets: %llu licenses backed up within %.0f s and restored within %.0f s; peak memory "
         "under %.0f MiB; the call returning within %.0f us; cancel->END within %.0f ms\n",
         TARGET_N, TARGET_BACKUP_S, TARGET_RESTORE_S, TARGET_PEAK_MIB, TARGET_CALL_US,
         TARGET_CANCEL_MS);
  for (i = 0; i < nsizes; i++) {
    row *w = &rows[i];
    if (w->backup_s == 0) continue;
    if (w->n == TARGET_N && w->backup_s > TARGET_BACKUP_S)
      printf("  MISSED: backup of %llu took %.2f s (target %.0f s)\n", (unsigned long long)w->n,
             w->backup_s, TARGET_BACKUP_S);
    if (w->n == TARGET_N && w->restore_s > TARGET_RESTORE_S)
      printf("  MISSED: restore of %llu took %.2f s (target %.0f s)\n", (unsigned long long)w->n,
             w->restore_s, TARGET_RESTORE_S);
    if (w->backup_mib >= TARGET_PEAK_MIB)
      printf("  MISSED: backup of %llu peaked at %.1f MiB\n", (unsigned long long)w->n, w->backup_mib);
    if (w->restore_mib >= TARGET_PEAK_MIB)
      printf("  MISSED: restore of %llu peaked at %.1f MiB\n", (unsigned long long)w->n, w->restore_mib);
    {
      const struct { const char *what; const probe *p; } pr[] = {
        {"backup", &w->cbk}, {"backup", &w->cbk0}, {"restore", &w->crs}, {"restore", &w->crs0},
        {"restore", &w->crs_tail}};
      size_t k;
      for (k = 0; k < sizeof pr / sizeof pr[0]; k++)
        if (pr[k].p->ran && !pr[k].p->early && pr[k].p->to_end_ms > TARGET_CANCEL_MS)
          printf("  MISSED: %s of %llu cancelled %.1f ms after the call took %.1f ms to END (%s)\n",
                 pr[k].what, (unsigned long long)w->n, pr[k].p->after_ms, pr[k].p->to_end_ms,
                 probe_outcome(pr[k].p));
    }
    if (w->backup_call_us > TARGET_CALL_US || w->restore_call_us > TARGET_CALL_US)
      printf("  MISSED: a starting call of the %llu row took %.1f us (backup) / %.1f us (restore)\n",
             (unsigned long long)w->n, w->backup_call_us, w->restore_call_us);
  }
  if (calls.n_backup_calls > 0 &&
      (vmax(calls.backup_calls_us, calls.n_backup_calls) > TARGET_CALL_US ||
       vmax(calls.restore_calls_us, calls.n_restore_calls) > TARGET_CALL_US))
    printf("  MISSED: a call-return sample on the small store exceeded %.0f us\n", TARGET_CALL_US);

  printf("\nload average %.2f at the end\n", loadavg());
  rm_rf(base);
  if (failures) printf("\n%d operation(s) FAILED (see the messages on stderr)\n", failures);
  return failures ? 1 : 0;
}
