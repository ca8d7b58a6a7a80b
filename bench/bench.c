/* wmlicense benchmark. For each N (default 10,000, 100,000 and 1,000,000 licenses; the arguments
   may choose other sizes) it builds a store, then measures on that same store:
   - a full backup and a full restore into a new store: wall time (call -> END), CPU time, peak
     RSS, and when the licenses were streamed (from the PROGRESS events);
   - the peers, timed in the same run on the same store: `sqlite3 <db> ".backup <file>"`,
     `sqlite3 <db> .dump` and `sqlite3 <new db> ".read <dump>"` (the restore peer is the .read
     alone; the dump is reported apart), and, when restic is on PATH, the first `restic backup` of
     the store directory into a fresh repository and `restic restore latest` of it. Ratios are
     ours / peer;
   - cancel -> END of backups and restores cancelled mid-run, right after the call, and (where
     that phase is long enough to aim at) during a restore's final commit, and what they leave;
   - how long the starting calls take to return: 20 sequential calls of each on a small store.
   Then, once, with the largest N: a contention test. 200 stores of max(N/200, 100) licenses
   (copies of one built store) are backed up (a) one after the other by one restorer and (b) by
   200 restorers started at once on the worker pool, until the last END; it reports both, the
   ratio (b)/(a), and the time each of the 200 starting calls of (b) took to return (p50, p99,
   max: the call under load).

   It prints one summary table (also as Markdown at the end, after a line "markdown:"), the
   cancel, call-return and contention figures, and a "goals" block: each of the issue's goals
   with the measured figure and "met" or "MISSED". It asserts nothing about time: the exit status
   is non-zero only when an operation fails.

   Every measured operation runs in its own fork()ed child that does only that operation, so
   wait4() gives its peak RSS (ru_maxrss) and CPU time. The parent never starts a restorer (it
   would start the library's worker threads, which a fork()ed child does not inherit).

   `bench --op build <store_dir> <n>`, `bench --op backup <store_dir> <backup_dir>` and
   `bench --op restore <backup_dir> <new_store_dir>` do one operation in the process itself, by
   the same code as the timed children, and exit: scripts/bench.sh runs the backup and the
   restore under valgrind --tool=callgrind to count instructions. They need WMLICENSE_HOME set
   (the embedded service's key lives there; a restore needs the one its backup was sealed to). */
#include "wmlicense.h"

#include <dirent.h>
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
#define CONTENTION_STORES 200
#define CONTENTION_MIN_N 100u

/* The issue's goals. Printed beside the figures and in the goals block, never asserted. */
#define GOAL_BACKUP_VS_SQLITE 2.0  /* backup / sqlite3 .backup */
#define GOAL_RESTORE_VS_READ 0.5   /* restore into a new store / sqlite3 .read of the dump */
#define GOAL_VS_RESTIC 1.0         /* ours / restic, backup and restore: below */
#define GOAL_PEAK_MIB 64.0         /* peak RSS: below */
#define GOAL_CANCEL_MS 100.0       /* cancel -> END */
#define GOAL_CALL_P99_US 100.0     /* wm_backup_restorer_backup return, p99 under load */
#define GOAL_CONTENTION 1.1        /* 200 restorers at once / one restorer, same work */
/* The README's absolute targets for 1,000,000 licenses (in the goals block when N = that). */
#define TARGET_BACKUP_S 3.0
#define TARGET_RESTORE_S 6.0
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
  /* contention test */
  uint64_t cont_n;                      /* licenses per store */
  int cont_stores;                      /* stores backed up (0: not run) */
  double cont_build_s, cont_copy_s;     /* the first store's build; the copies */
  double cont_seq_s, cont_seq_cpu;      /* (a) one restorer, one store after the other */
  double cont_par_s, cont_par_cpu;      /* (b) all restorers at once, until the last END */
  double cont_par_issue_s;              /* (b) time to make all the starting calls */
  double cont_calls_us[CONTENTION_STORES]; /* (b) each starting call, in call order */
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
  int any_count;           /* --op mode: n unknown, any count is fine (processed == total) */
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
    r->count = ev.processed;
    if (ev.hr != WM_S_OK) {
      fail_msg(r, "%s END 0x%08x %s", a->restore ? "restore" : "backup", (unsigned)ev.hr, ev.message);
    } else if ((a->any_count ? ev.processed != ev.total : ev.processed != a->n || ev.total != a->n) ||
               ev.skipped != 0) {
      fail_msg(r, "%s END counts processed %llu total %llu skipped %llu, expected %llu",
               a->restore ? "restore" : "backup", (unsigned long long)ev.processed,
               (unsigned long long)ev.total, (unsigned long long)ev.skipped, (unsigned long long)a->n);
    }
    r->t_begin = ev.begin - t0;
    r->t_connecting = ev.connecting > 0 ? ev.connecting - t0 : 0;
    r->t_disconnecting = ev.disconnecting > 0 ? ev.disconnecting - t0 : 0;
    r->t_end = ev.end - t0;
    {
      double se = stream_end_estimate(&ev, ev.total);
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

/* ---------------------------------------------------------------------------------------------
   Contention: CONTENTION_STORES stores backed up by one restorer in turn, then by as many
   restorers at once. Only END matters here: a small event record per restorer (an op_events
   each would add 13 MiB to the child's peak). */
typedef struct {
  double end;
  int ends;
  wm_hresult hr;
  uint64_t processed, total, skipped;
  char message[160];
} end_events;

static void on_end_event(const wm_event *e, void *context) {
  end_events *ev = context;
  if (e->status != WM_STATUS_BACKUPRESTORE_END) return;
  ev->end = now_s();
  ev->ends++;
  ev->hr = e->hr;
  ev->processed = e->processed;
  ev->total = e->total;
  ev->skipped = e->skipped;
  snprintf(ev->message, sizeof ev->message, "%s", e->message ? e->message : "");
}

typedef struct {
  uint64_t n;          /* licenses per store */
  char dir[PATH_LEN];  /* scratch directory of the test */
} contention_arg;

/* Copies the regular file `from` to `to` (created with `mode`); 0 on success. */
static int copy_file(const char *from, const char *to, mode_t mode) {
  char buf[65536];
  int in = open(from, O_RDONLY), out = -1, rc = -1;
  if (in < 0) return -1;
  out = open(to, O_WRONLY | O_CREAT | O_EXCL, mode);
  if (out < 0) goto done;
  for (;;) {
    ssize_t n = read(in, buf, sizeof buf), off = 0;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) goto done;
    if (n == 0) break;
    while (off < n) {
      ssize_t w = write(out, buf + off, (size_t)(n - off));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) goto done;
      off += w;
    }
  }
  rc = 0;
done:
  if (out >= 0 && close(out) != 0) rc = -1;
  close(in);
  return rc;
}

/* Copies a store directory (its regular files: licenses.db, identity, ...) to a new one. The
   copy has the same identity and lineage, which a backup does not mind. */
static int copy_store(const char *from, const char *to, child_result *r) {
  DIR *d = opendir(from);
  struct dirent *e;
  int rc = 0;
  if (!d || mkdir(to, 0700) != 0) {
    fail_msg(r, "copy %s to %s: %s", from, to, strerror(errno));
    if (d) closedir(d);
    return -1;
  }
  while (rc == 0 && (e = readdir(d)) != NULL) {
    char src[PATH_LEN], dst[PATH_LEN];
    struct stat st;
    cat3(src, sizeof src, from, "/", e->d_name);
    cat3(dst, sizeof dst, to, "/", e->d_name);
    if (stat(src, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (copy_file(src, dst, st.st_mode & 0777) != 0) {
      fail_msg(r, "copy %s to %s: %s", src, dst, strerror(errno));
      rc = -1;
    }
  }
  closedir(d);
  return rc;
}

static double self_cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return cpu_s(&ru);
}

/* Checks one END of the contention test. */
static int check_end(child_result *r, const end_events *ev, uint64_t n, const char *what, int i) {
  if (ev->ends != 1 || ev->hr != WM_S_OK || ev->processed != n || ev->total != n || ev->skipped) {
    fail_msg(r, "%s, store %d: %d END, 0x%08x %s, processed %llu total %llu skipped %llu (expected %llu)",
             what, i, ev->ends, (unsigned)ev->hr, ev->message, (unsigned long long)ev->processed,
             (unsigned long long)ev->total, (unsigned long long)ev->skipped, (unsigned long long)n);
    return 0;
  }
  return 1;
}

static void child_contention(const void *argp, child_result *r) {
  const contention_arg *a = argp;
  static end_events evs[CONTENTION_STORES], ev1;
  static wm_backup_restorer *brs[CONTENTION_STORES];
  static char stores[CONTENTION_STORES][PATH_LEN];
  wm_backup_restorer *one = NULL;
  char path[PATH_LEN];
  build_arg ba;
  double t0, c0, last;
  int i, made = 0;

  /* the stores: one built as the main stores are, the others copies of it */
  for (i = 0; i < CONTENTION_STORES; i++) {
    char leaf[32];
    snprintf(leaf, sizeof leaf, "/store-%d", i);
    cat3(stores[i], sizeof stores[i], a->dir, leaf, "");
  }
  memset(&ba, 0, sizeof ba);
  ba.n = a->n;
  snprintf(ba.store, sizeof ba.store, "%s", stores[0]);
  child_build(&ba, r);
  if (!r->ok) return;
  r->cont_build_s = r->seconds;
  r->cont_n = a->n;
  t0 = now_s();
  for (i = 1; i < CONTENTION_STORES; i++)
    if (copy_store(stores[0], stores[i], r) != 0) return;
  r->cont_copy_s = now_s() - t0;

  /* (a) one restorer, one store after the other, each waited for. A first backup (untimed)
     starts the worker pool and reads the service's key, as in a process already running. */
  if (!check_hr(r, "wm_backup_restorer_create", wm_backup_restorer_create(on_end_event, &ev1, &one)))
    return;
  cat3(path, sizeof path, a->dir, "/warm-up", "");
  if (!set_prop(r, one, WM_PROP_STORE_PATH, stores[0]) || !set_prop(r, one, WM_PROP_BACKUP_PATH, path))
    goto out;
  memset(&ev1, 0, sizeof ev1);
  if (!check_hr(r, "wm_backup_restorer_backup", wm_backup_restorer_backup(one, WM_BACKUP_OVERWRITE)))
    goto out;
  wm_backup_restorer_wait(one, WM_INFINITE);
  if (!check_end(r, &ev1, a->n, "warm-up backup", 0)) goto out;
  c0 = self_cpu_s();
  t0 = now_s();
  for (i = 0; i < CONTENTION_STORES; i++) {
    char leaf[32];
    snprintf(leaf, sizeof leaf, "/one-%d", i);
    cat3(path, sizeof path, a->dir, leaf, "");
    if (!set_prop(r, one, WM_PROP_STORE_PATH, stores[i]) || !set_prop(r, one, WM_PROP_BACKUP_PATH, path))
      goto out;
    memset(&ev1, 0, sizeof ev1);
    if (!check_hr(r, "wm_backup_restorer_backup", wm_backup_restorer_backup(one, WM_BACKUP_OVERWRITE)))
      goto out;
    wm_backup_restorer_wait(one, WM_INFINITE);
    if (!check_end(r, &ev1, a->n, "one restorer", i)) goto out;
  }
  r->cont_seq_s = ev1.end - t0;
  r->cont_seq_cpu = self_cpu_s() - c0;

  /* (b) one restorer per store, set up beforehand, all started at once */
  for (made = 0; made < CONTENTION_STORES; made++) {
    char leaf[32];
    memset(&evs[made], 0, sizeof evs[made]);
    if (!check_hr(r, "wm_backup_restorer_create",
                  wm_backup_restorer_create(on_end_event, &evs[made], &brs[made])))
      goto out;
    snprintf(leaf, sizeof leaf, "/many-%d", made);
    cat3(path, sizeof path, a->dir, leaf, "");
    if (!set_prop(r, brs[made], WM_PROP_STORE_PATH, stores[made]) ||
        !set_prop(r, brs[made], WM_PROP_BACKUP_PATH, path)) {
      made++;
      goto out;
    }
  }
  c0 = self_cpu_s();
  t0 = now_s();
  for (i = 0; i < CONTENTION_STORES; i++) {
    double t1 = now_s(), t2;
    wm_hresult hr = wm_backup_restorer_backup(brs[i], WM_BACKUP_OVERWRITE);
    t2 = now_s();
    r->cont_calls_us[i] = (t2 - t1) * 1e6;
    if (!check_hr(r, "wm_backup_restorer_backup (200 at once)", hr)) goto out;
  }
  r->cont_par_issue_s = now_s() - t0;
  last = t0;
  for (i = 0; i < CONTENTION_STORES; i++) wm_backup_restorer_wait(brs[i], WM_INFINITE);
  r->cont_par_cpu = self_cpu_s() - c0;
  for (i = 0; i < CONTENTION_STORES; i++) {
    if (!check_end(r, &evs[i], a->n, "200 restorers at once", i)) goto out;
    if (evs[i].end > last) last = evs[i].end;
  }
  r->cont_par_s = last - t0;
  r->cont_stores = CONTENTION_STORES;
out:
  for (i = 0; i < made; i++) wm_backup_restorer_destroy(brs[i]);
  wm_backup_restorer_destroy(one);
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

/* The nearest-rank pct-th percentile of v (sorted in place). */
static double percentile(double *v, int n, int pct) {
  int k;
  if (n <= 0) return 0;
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  k = (pct * n + 99) / 100;
  if (k < 1) k = 1;
  if (k > n) k = n;
  return v[k - 1];
}

/* Max of v without one occurrence of `skip`. */
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
  double rc_backup_s, rc_restore_s, rc_backup_mib, rc_restore_mib; /* restic */
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

/* ours / peer, or -1 when either is missing. */
static double ratio_of(double ours, double peer) { return ours > 0 && peer > 0 ? ours / peer : -1; }

/* Whether v meets the goal: v < goal (strict) or v <= goal. */
static int goal_met(double v, double goal, int strict) { return strict ? v < goal : v <= goal; }

/* A ratio cell of the text table: "3.71x!" when it misses the goal, "0.45x " when it meets it. */
static void fmt_ratio(char *buf, size_t len, double ratio, double goal, int strict) {
  if (ratio < 0)
    snprintf(buf, len, "- ");
  else
    snprintf(buf, len, "%.2fx%s", ratio, goal_met(ratio, goal, strict) ? " " : "!");
}

/* n with thousands separators: 1,000,000. */
static const char *fmt_count(char *buf, size_t len, uint64_t n) {
  char digits[32];
  size_t nd, i, o = 0;
  snprintf(digits, sizeof digits, "%llu", (unsigned long long)n);
  nd = strlen(digits);
  for (i = 0; i < nd && o + 2 < len; i++) {
    if (i > 0 && (nd - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = digits[i];
  }
  buf[o] = 0;
  return buf;
}

/* The first `words` words of the first line `cmd` prints, or "" (e.g. "3.40.1" for sqlite3). */
static void tool_version(const char *cmd, int words, char *out, size_t len) {
  char line[256];
  FILE *p = popen(cmd, "r");
  size_t i = 0;
  int w = 0;
  out[0] = 0;
  if (!p) return;
  if (fgets(line, sizeof line, p)) {
    for (i = 0; line[i] && line[i] != '\n' && i + 1 < len; i++) {
      if (line[i] == ' ' && ++w >= words) break;
      out[i] = line[i];
    }
    out[i] = 0;
  }
  pclose(p);
}

/* One line of the goals block. state: 1 met, 0 missed, -1 not measured. */
static void goal_line(const char *goal, const char *where, const char *figure, int state,
                      const char *note) {
  printf("  %-61s %-24s %10s  %s%s%s\n", goal, where, figure,
         state > 0 ? "met" : state == 0 ? "MISSED" : "not measured", note && *note ? "  " : "",
         note ? note : "");
}

/* `bench --op build|backup|restore ...`: one operation in this process, by the children's code. */
static int op_main(int argc, char **argv) {
  child_result r;
  const char *op = argc > 2 ? argv[2] : "";
  const char *home = getenv("WMLICENSE_HOME");
  int i;
  memset(&r, 0, sizeof r);
  r.ok = 1;
  if (argc != 5 || (strcmp(op, "build") != 0 && strcmp(op, "backup") != 0 && strcmp(op, "restore") != 0)) {
    fprintf(stderr,
            "usage: %s --op build <store_dir> <n>\n"
            "       %s --op backup <store_dir> <backup_dir>\n"
            "       %s --op restore <backup_dir> <new_store_dir>\n",
            argv[0], argv[0], argv[0]);
    return 2;
  }
  if (!home || !*home) {
    fprintf(stderr, "%s --op: set WMLICENSE_HOME (the embedded service's key lives there; a restore "
                    "needs the one its backup was sealed to)\n", argv[0]);
    return 2;
  }
  for (i = 3; i < 5; i++)
    if (strlen(argv[i]) >= PATH_LEN) {
      fprintf(stderr, "path too long: %s\n", argv[i]);
      return 2;
    }
  if (strcmp(op, "build") == 0) {
    static build_arg ba;
    char *end = NULL;
    unsigned long long v = strtoull(argv[4], &end, 10);
    if (!end || *end || v == 0) {
      fprintf(stderr, "%s --op build: bad license count %s\n", argv[0], argv[4]);
      return 2;
    }
    ba.n = v;
    snprintf(ba.store, sizeof ba.store, "%s", argv[3]);
    child_build(&ba, &r);
  } else {
    static op_arg oa;
    oa.restore = strcmp(op, "restore") == 0;
    oa.any_count = 1;
    snprintf(oa.store, sizeof oa.store, "%s", argv[oa.restore ? 4 : 3]);
    snprintf(oa.path, sizeof oa.path, "%s", argv[oa.restore ? 3 : 4]);
    child_op(&oa, &r);
  }
  if (!r.ok) {
    fprintf(stderr, "%s --op %s FAILED: %s\n", argv[0], op, r.error);
    return 1;
  }
  printf("%s: %llu licenses in %.3f s\n", op, (unsigned long long)r.count, r.seconds);
  return 0;
}

int main(int argc, char **argv) {
  static const uint64_t default_sizes[] = {10000, 100000, 1000000};
  uint64_t sizes[16], nmax = 0;
  int nsizes = 0, i, failures = 0, have_sqlite, have_restic;
  char base[PATH_LEN], home[PATH_LEN], sqlite_version[64], restic_version[64];
  const char *tmp = getenv("TMPDIR");
  static row rows[16];
  static child_result cr, calls, cont;
  struct rusage ru;
  double baseline_mib, cont_mib = 0;

  if (argc > 1 && strcmp(argv[1], "--op") == 0) return op_main(argc, argv);
  for (i = 1; i < argc && nsizes < 16; i++) {
    char *end = NULL;
    unsigned long long v = strtoull(argv[i], &end, 10);
    if (!end || *end || v == 0) {
      fprintf(stderr,
              "usage: %s [N ...]   (license counts; default 10000 100000 1000000)\n"
              "       %s --op build|backup|restore ...   (one operation; --op alone for its usage)\n",
              argv[0], argv[0]);
      return 2;
    }
    sizes[nsizes++] = v;
  }
  if (nsizes == 0)
    for (i = 0; i < 3; i++) sizes[nsizes++] = default_sizes[i];
  for (i = 0; i < nsizes; i++)
    if (sizes[i] > nmax) nmax = sizes[i];

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
  { /* absolute and without symbolic links: restic restores a backup under its full path */
    char *abs = realpath(base, NULL);
    if (abs && strlen(abs) < 400) snprintf(base, sizeof base, "%s", abs);
    free(abs);
  }
  cat3(home, sizeof home, base, "/home", "");
  mkdir(home, 0700);
  setenv("WMLICENSE_HOME", home, 1); /* the embedded service lives in $WMLICENSE_HOME/service */
  have_sqlite = on_path("sqlite3");
  have_restic = on_path("restic");
  sqlite_version[0] = restic_version[0] = 0;
  if (have_sqlite) tool_version("sqlite3 --version 2>/dev/null", 1, sqlite_version, sizeof sqlite_version);
  if (have_restic) {
    char cache[PATH_LEN];
    tool_version("restic version 2>/dev/null", 2, restic_version, sizeof restic_version);
    /* restic's own environment: a password, and its cache in the scratch directory (removed
       with it) instead of ~/.cache; the repository is set per N */
    cat3(cache, sizeof cache, base, "/restic-cache", "");
    setenv("RESTIC_PASSWORD", "bench", 1);
    setenv("RESTIC_CACHE_DIR", cache, 1);
  }

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
  printf("peers, timed in this run on the same stores: ");
  if (have_sqlite)
    printf("sqlite3 %s", sqlite_version);
  else
    printf("sqlite3: not on PATH (its columns are left as \"-\")");
  if (have_restic)
    printf("; %s\n", restic_version);
  else
    printf("; restic: not installed (apt-get install restic)\n");

  run_child(child_nothing, NULL, &cr, &ru);
  baseline_mib = maxrss_mib(&ru);
  printf("peak RSS of a fork()ed child that does nothing: %.1f MiB (the floor of the peak columns)\n",
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
    w->rc_backup_s = w->rc_restore_s = -1;
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

    /* the peers on the same store: the sqlite3 command-line tool on its database */
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
    /* restic: the first backup of the store directory into a fresh repository, and its restore
       into an empty directory */
    if (have_restic) {
      char repo[PATH_LEN], target[PATH_LEN], restored_db[PATH_LEN * 2];
      char *init_argv[] = {"restic", "init", "--quiet", NULL};
      char *bk_argv[] = {"restic", "backup", "--quiet", ba.store, NULL};
      char *rs_argv[] = {"restic", "restore", "latest", "--quiet", "--target", target, NULL};
      struct rusage r1, r2, r3;
      fprintf(stderr, "N=%llu: restic backup, restore...\n", (unsigned long long)n);
      cat3(repo, sizeof repo, dir, "/restic-repo", "");
      cat3(target, sizeof target, dir, "/restic-restored", "");
      setenv("RESTIC_REPOSITORY", repo, 1);
      if (run_timed(init_argv, "/dev/null", &r1) >= 0) {
        w->rc_backup_s = run_timed(bk_argv, "/dev/null", &r2);
        w->rc_backup_mib = maxrss_mib(&r2);
      }
      if (w->rc_backup_s >= 0) {
        w->rc_restore_s = run_timed(rs_argv, "/dev/null", &r3);
        w->rc_restore_mib = maxrss_mib(&r3);
        cat3(restored_db, sizeof restored_db, target, src_db, ""); /* restic keeps the full path */
        if (w->rc_restore_s >= 0 && dir_bytes(restored_db) != w->db_bytes) {
          fprintf(stderr, "  restic restore: %s is missing or not the size of %s\n", restored_db, src_db);
          w->rc_restore_s = -1;
        }
      }
      unsetenv("RESTIC_REPOSITORY");
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
    {
      char small[PATH_LEN];
      cat3(small, sizeof small, base, "/small", "");
      rm_rf(small);
    }
  }

  /* contention: 200 stores, one restorer in turn vs. 200 at once (the largest N's total work) */
  {
    static contention_arg ca;
    ca.n = nmax / CONTENTION_STORES > CONTENTION_MIN_N ? nmax / CONTENTION_STORES : CONTENTION_MIN_N;
    cat3(ca.dir, sizeof ca.dir, base, "/contention", "");
    mkdir(ca.dir, 0700);
    fprintf(stderr, "contention: %d stores of %llu licenses, one restorer in turn, then %d at once...\n",
            CONTENTION_STORES, (unsigned long long)ca.n, CONTENTION_STORES);
    if (run_child(child_contention, &ca, &cont, &ru) != 0 || !cont.ok) {
      note_failure("contention test", &cont);
      failures++;
    }
    cont_mib = maxrss_mib(&ru);
    rm_rf(ca.dir);
  }

  /* ----- report ----- */
  printf("\ndetails per N:\n");
  for (i = 0; i < nsizes; i++) {
    row *w = &rows[i];
    if (w->backup_s == 0) continue;
    printf("  N=%llu: store built in %.2f s (put_many, %u per call); database %.1f MiB, backup file "
           "%.1f MiB\n",
           (unsigned long long)w->n, w->build_s, BATCH, (double)w->db_bytes / 1048576.0,
           (double)w->backup_bytes / 1048576.0);
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
             "(%.1f MiB); .dump + .read %.3f s\n",
             w->sq_backup_s, w->sq_backup_mib, w->sq_dump_s, w->sq_dump_mib, w->sq_read_s,
             w->sq_read_mib, w->sq_dump_s >= 0 && w->sq_read_s >= 0 ? w->sq_dump_s + w->sq_read_s : -1);
    if (w->rc_backup_s >= 0)
      printf("    restic : backup %.3f s (%.1f MiB peak), restore %.3f s (%.1f MiB)\n", w->rc_backup_s,
             w->rc_backup_mib, w->rc_restore_s, w->rc_restore_mib);
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

  /* the summary table */
  printf("\nsummary: seconds from the call to END (ours) or of the whole command (peers); ratio = "
         "ours / peer;\n  the goal line gives each goal, \"!\" marks a figure that misses it, \"-\" "
         "not measured%s\n",
         have_restic ? "" : " (restic: not installed (apt-get install restic))");
  printf("%10s | %-49s | %-47s | %s\n", "", "backup, s", "restore into a new store, s", "peak RSS, MiB");
  printf("%10s | %7s %16s %7s %8s %7s | %7s %14s %7s %8s %7s | %s\n", "licenses", "ours",
         "sqlite3 .backup", "ratio", "restic", "ratio", "ours", "sqlite3 .read", "ratio", "restic",
         "ratio", "backup / restore");
  {
    char g1[16], g2[16], g3[16], g4[16];
    snprintf(g1, sizeof g1, "<=%.1fx", GOAL_BACKUP_VS_SQLITE);
    snprintf(g2, sizeof g2, "<%.1fx", GOAL_VS_RESTIC);
    snprintf(g3, sizeof g3, "<=%.1fx", GOAL_RESTORE_VS_READ);
    snprintf(g4, sizeof g4, "<%.0f", GOAL_PEAK_MIB);
    printf("%10s | %7s %16s %7s %8s %7s | %7s %14s %7s %8s %7s | %6s / %s\n", "goal", "", "", g1, "",
           g2, "", "", g3, "", g2, g4, g4);
  }
  for (i = 0; i < nsizes; i++) {
    row *w = &rows[i];
    char c[12][32], cnt[32];
    fmt_count(cnt, sizeof cnt, w->n);
    if (!w->ok && w->backup_s == 0) {
      printf("%10s | FAILED (see the messages on stderr)\n", cnt);
      continue;
    }
    fmt_cell(c[0], 32, w->backup_s, "%.3f");
    fmt_cell(c[1], 32, w->sq_backup_s, "%.3f");
    fmt_ratio(c[2], 32, ratio_of(w->backup_s, w->sq_backup_s), GOAL_BACKUP_VS_SQLITE, 0);
    fmt_cell(c[3], 32, w->rc_backup_s, "%.3f");
    fmt_ratio(c[4], 32, ratio_of(w->backup_s, w->rc_backup_s), GOAL_VS_RESTIC, 1);
    fmt_cell(c[5], 32, w->restore_s > 0 ? w->restore_s : -1, "%.3f");
    fmt_cell(c[6], 32, w->sq_read_s, "%.3f");
    fmt_ratio(c[7], 32, ratio_of(w->restore_s, w->sq_read_s), GOAL_RESTORE_VS_READ, 0);
    fmt_cell(c[8], 32, w->rc_restore_s, "%.3f");
    fmt_ratio(c[9], 32, ratio_of(w->restore_s, w->rc_restore_s), GOAL_VS_RESTIC, 1);
    snprintf(c[10], 32, "%.1f%s", w->backup_mib, w->backup_mib < GOAL_PEAK_MIB ? "" : "!");
    fmt_cell(c[11], 32, w->restore_mib > 0 ? w->restore_mib : -1, "%.1f");
    if (w->restore_mib >= GOAL_PEAK_MIB) strcat(c[11], "!");
    printf("%10s | %7s %16s %7s %8s %7s | %7s %14s %7s %8s %7s | %6s / %s%s\n", cnt, c[0], c[1],
           c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11],
           w->ok ? "" : "  (a check failed, see stderr)");
  }

  printf("\ncancel -> END, ms (mid-run: 100 ms after the call, or half-way through a shorter "
         "operation; at once: right after the call;\n  final commit: a restore cancelled in its "
         "last phase, where that lasts 0.2 s or more; \"done\": it had ended first; goal <= %.0f ms):\n",
         GOAL_CANCEL_MS);
  printf("%10s  %15s %15s %16s %16s %21s\n", "licenses", "backup mid-run", "backup at once",
         "restore mid-run", "restore at once", "restore final commit");
  for (i = 0; i < nsizes; i++) {
    row *w = &rows[i];
    const probe *pr[5];
    char c[5][32], cnt[32];
    int k;
    pr[0] = &w->cbk;
    pr[1] = &w->cbk0;
    pr[2] = &w->crs;
    pr[3] = &w->crs0;
    pr[4] = &w->crs_tail;
    if (w->backup_s == 0) continue;
    for (k = 0; k < 5; k++) {
      if (!pr[k]->ran)
        snprintf(c[k], 32, "-");
      else if (pr[k]->early)
        snprintf(c[k], 32, "done");
      else
        snprintf(c[k], 32, "%.1f%s", pr[k]->to_end_ms, pr[k]->to_end_ms <= GOAL_CANCEL_MS ? "" : "!");
    }
    printf("%10s  %15s %15s %16s %16s %21s\n", fmt_count(cnt, sizeof cnt, w->n), c[0], c[1], c[2], c[3],
           c[4]);
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
  printf("  under load: see the contention test's (b) below\n");

  {
    const char *workers = getenv("WMLICENSE_WORKERS");
    char buf[32];
    printf("\ncontention: %d stores of %llu licenses each (%s in all; copies of one store built as "
           "the stores above; from the largest N: max(N/%d, %u)), worker pool of %s\n",
           CONTENTION_STORES, (unsigned long long)cont.cont_n,
           fmt_count(buf, sizeof buf, cont.cont_n * CONTENTION_STORES), CONTENTION_STORES,
           CONTENTION_MIN_N,
           workers && *workers ? workers : "the default size (CPUs, at least 2, at most 16)");
    if (workers && *workers) printf("  (the pool size is WMLICENSE_WORKERS)\n");
    if (cont.cont_stores > 0) {
      double ratio = cont.cont_par_s / cont.cont_seq_s;
      double v[CONTENTION_STORES];
      memcpy(v, cont.cont_calls_us, sizeof v);
      printf("  (a) one restorer backs them up one after the other, each waited for: %8.3f s wall, "
             "%.3f s CPU\n", cont.cont_seq_s, cont.cont_seq_cpu);
      printf("  (b) %d restorers start their backups at once, until the last END: %8.3f s wall, "
             "%.3f s CPU (the %d calls took %.1f ms)\n",
             CONTENTION_STORES, cont.cont_par_s, cont.cont_par_cpu, CONTENTION_STORES,
             cont.cont_par_issue_s * 1e3);
      printf("  ratio (b)/(a) %.2fx (goal <= %.1fx)\n", ratio, GOAL_CONTENTION);
      printf("  wm_backup_restorer_backup under load: the %d starting calls of (b), each made while the "
             "pool works on the backups started before it: p50 %.1f us, p99 %.1f us, max %.1f us "
             "(goal: p99 <= %.0f us)\n",
             CONTENTION_STORES, percentile(v, CONTENTION_STORES, 50),
             percentile(v, CONTENTION_STORES, 99), vmax(v, CONTENTION_STORES), GOAL_CALL_P99_US);
      printf("  setup: first store built in %.1f ms, %d copies in %.1f ms; peak RSS of the child with "
             "%d restorers: %.1f MiB\n",
             cont.cont_build_s * 1e3, CONTENTION_STORES - 1, cont.cont_copy_s * 1e3,
             CONTENTION_STORES + 1, cont_mib);
    } else {
      printf("  FAILED (see the messages on stderr)\n");
    }
  }

  printf("\nload average %.2f at the end\n", loadavg());
  if (failures) printf("\n%d operation(s) FAILED (see the messages on stderr)\n", failures);

  /* the goals block */
  printf("\ngoals (the issue's; printed, never asserted: the exit status is non-zero only when an "
         "operation fails):\n");
  {
    char goal[96], where[32], fig[32];
    int j;
    const struct { const char *name; int backup; double goal; int strict; int restic; } rg[] = {
      {"backup <= %.1fx sqlite3 .backup", 1, GOAL_BACKUP_VS_SQLITE, 0, 0},
      {"restore into a new store <= %.1fx sqlite3 .read", 0, GOAL_RESTORE_VS_READ, 0, 0},
      {"backup faster than restic backup (< %.1fx)", 1, GOAL_VS_RESTIC, 1, 1},
      {"restore faster than restic restore (< %.1fx)", 0, GOAL_VS_RESTIC, 1, 1}};
    for (j = 0; j < 4; j++) {
      snprintf(goal, sizeof goal, rg[j].name, rg[j].goal);
      if ((rg[j].restic && !have_restic) || (!rg[j].restic && !have_sqlite)) {
        goal_line(goal, "all N", "-", -1,
                  rg[j].restic ? "restic: not installed (apt-get install restic)" : "sqlite3: not on PATH");
        continue;
      }
      for (i = 0; i < nsizes; i++) {
        row *w = &rows[i];
        double ours = rg[j].backup ? w->backup_s : w->restore_s;
        double peer = rg[j].restic ? (rg[j].backup ? w->rc_backup_s : w->rc_restore_s)
                                   : (rg[j].backup ? w->sq_backup_s : w->sq_read_s);
        double ratio = ratio_of(ours, peer);
        snprintf(where, sizeof where, "N=%s", fmt_count(fig, sizeof fig, w->n));
        fmt_cell(fig, sizeof fig, ratio, "%.2fx");
        goal_line(i == 0 ? goal : "", where, fig, ratio < 0 ? -1 : goal_met(ratio, rg[j].goal, rg[j].strict),
                  ratio < 0 ? "(failed, see stderr)" : "");
      }
    }
  }
  {
    double peak = -1;
    uint64_t at = 0;
    const char *what = "";
    char goal[64], where[48], fig[32], cnt[32];
    for (i = 0; i < nsizes; i++) {
      if (rows[i].backup_mib > peak && rows[i].backup_s > 0) {
        peak = rows[i].backup_mib;
        at = rows[i].n;
        what = "backup";
      }
      if (rows[i].restore_mib > peak && rows[i].restore_s > 0) {
        peak = rows[i].restore_mib;
        at = rows[i].n;
        what = "restore";
      }
    }
    snprintf(goal, sizeof goal, "peak RSS < %.0f MiB", GOAL_PEAK_MIB);
    snprintf(where, sizeof where, "max: %s N=%s", what, fmt_count(cnt, sizeof cnt, at));
    fmt_cell(fig, sizeof fig, peak, "%.1f MiB");
    goal_line(goal, peak < 0 ? "-" : where, fig, peak < 0 ? -1 : goal_met(peak, GOAL_PEAK_MIB, 1), "");
  }
  {
    double worst = -1;
    int probes = 0;
    char goal[64], where[48], fig[32], note[160];
    note[0] = 0;
    for (i = 0; i < nsizes; i++) {
      row *w = &rows[i];
      const struct { const char *what; const probe *p; } pr[] = {
        {"backup mid-run", &w->cbk}, {"backup at once", &w->cbk0}, {"restore mid-run", &w->crs},
        {"restore at once", &w->crs0}, {"restore final commit", &w->crs_tail}};
      size_t k;
      for (k = 0; k < sizeof pr / sizeof pr[0]; k++) {
        if (!pr[k].p->ran || pr[k].p->early) continue;
        probes++;
        if (pr[k].p->to_end_ms > worst) {
          char cnt[32];
          worst = pr[k].p->to_end_ms;
          snprintf(note, sizeof note, "(worst: %s, N=%s, %s)", pr[k].what,
                   fmt_count(cnt, sizeof cnt, w->n), probe_outcome(pr[k].p));
        }
      }
    }
    snprintf(goal, sizeof goal, "cancel->END <= %.0f ms", GOAL_CANCEL_MS);
    snprintf(where, sizeof where, "max of %d cancels", probes);
    fmt_cell(fig, sizeof fig, worst, "%.1f ms");
    goal_line(goal, where, fig, worst < 0 ? -1 : goal_met(worst, GOAL_CANCEL_MS, 0),
              worst > GOAL_CANCEL_MS ? note : "");
  }
  {
    char goal[80], where[48], fig[32];
    double v[CONTENTION_STORES], p99 = -1;
    if (cont.cont_stores > 0) {
      memcpy(v, cont.cont_calls_us, sizeof v);
      p99 = percentile(v, CONTENTION_STORES, 99);
    }
    snprintf(goal, sizeof goal, "wm_backup_restorer_backup returns <= %.0f us (p99, under load)",
             GOAL_CALL_P99_US);
    snprintf(where, sizeof where, "p99 of %d calls", CONTENTION_STORES);
    fmt_cell(fig, sizeof fig, p99, "%.1f us");
    goal_line(goal, where, fig, p99 < 0 ? -1 : goal_met(p99, GOAL_CALL_P99_US, 0),
              p99 < 0 ? "(contention test failed)" : "");
    snprintf(goal, sizeof goal, "%d restorers <= %.1fx one restorer, same work", CONTENTION_STORES,
             GOAL_CONTENTION);
    fmt_cell(fig, sizeof fig, cont.cont_stores > 0 ? cont.cont_par_s / cont.cont_seq_s : -1, "%.2fx");
    goal_line(goal, "(b)/(a)", fig,
              cont.cont_stores > 0 ? goal_met(cont.cont_par_s / cont.cont_seq_s, GOAL_CONTENTION, 0) : -1,
              cont.cont_stores > 0 ? "" : "(contention test failed)");
  }
  for (i = 0; i < nsizes; i++) { /* the README's absolute targets, where N is theirs */
    row *w = &rows[i];
    char goal[80], fig[32];
    if (w->n != TARGET_N || w->backup_s == 0) continue;
    snprintf(goal, sizeof goal, "README: backup of 1,000,000 within %.0f s", TARGET_BACKUP_S);
    snprintf(fig, sizeof fig, "%.2f s", w->backup_s);
    goal_line(goal, "N=1,000,000", fig, goal_met(w->backup_s, TARGET_BACKUP_S, 0), "");
    snprintf(goal, sizeof goal, "README: restore of 1,000,000 within %.0f s", TARGET_RESTORE_S);
    fmt_cell(fig, sizeof fig, w->restore_s > 0 ? w->restore_s : -1, "%.2f s");
    goal_line(goal, "N=1,000,000", fig,
              w->restore_s > 0 ? goal_met(w->restore_s, TARGET_RESTORE_S, 0) : -1, "");
  }

  /* the summary table again, as Markdown (the README's performance section is made from it) */
  printf("\nmarkdown:\n");
  printf("| licenses | backup | `sqlite3 .backup` | ratio (goal ≤ %.1f×) | `restic backup` | ratio (goal < "
         "%.1f×) | restore | `sqlite3 .read` | ratio (goal ≤ %.1f×) | `restic restore` | ratio (goal < "
         "%.1f×) | peak RSS backup / restore (goal < %.0f MiB) |\n",
         GOAL_BACKUP_VS_SQLITE, GOAL_VS_RESTIC, GOAL_RESTORE_VS_READ, GOAL_VS_RESTIC, GOAL_PEAK_MIB);
  printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (i = 0; i < nsizes; i++) {
    row *w = &rows[i];
    char c[12][32], cnt[32];
    if (w->backup_s == 0) {
      printf("| %s | failed | | | | | | | | | | |\n", fmt_count(cnt, sizeof cnt, w->n));
      continue;
    }
    fmt_cell(c[0], 32, w->backup_s, "%.3f s");
    fmt_cell(c[1], 32, w->sq_backup_s, "%.3f s");
    fmt_cell(c[2], 32, ratio_of(w->backup_s, w->sq_backup_s), "%.2f×");
    fmt_cell(c[3], 32, w->rc_backup_s, "%.3f s");
    fmt_cell(c[4], 32, ratio_of(w->backup_s, w->rc_backup_s), "%.2f×");
    fmt_cell(c[5], 32, w->restore_s > 0 ? w->restore_s : -1, "%.3f s");
    fmt_cell(c[6], 32, w->sq_read_s, "%.3f s");
    fmt_cell(c[7], 32, ratio_of(w->restore_s, w->sq_read_s), "%.2f×");
    fmt_cell(c[8], 32, w->rc_restore_s, "%.3f s");
    fmt_cell(c[9], 32, ratio_of(w->restore_s, w->rc_restore_s), "%.2f×");
    fmt_cell(c[10], 32, w->backup_mib, "%.1f");
    fmt_cell(c[11], 32, w->restore_mib > 0 ? w->restore_mib : -1, "%.1f");
    printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s MiB |\n",
           fmt_count(cnt, sizeof cnt, w->n), c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8],
           c[9], c[10], c[11]);
  }

  rm_rf(base);
  return failures ? 1 : 0;
}
