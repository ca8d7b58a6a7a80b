/* Helpers of the stress tests (test_cancel, test_corruption, test_lifecycle): an event recorder
   callback, property and store-filling shortcuts, whole-file I/O and a store dump (count +
   checksum of every field). Include after nothing else: it includes test_util.h. */
#ifndef WMLICENSE_STRESS_UTIL_H
#define WMLICENSE_STRESS_UTIL_H

#include "test_util.h"

#include <dirent.h>
#include <pthread.h>
#include <time.h>

/* ---------------------------------------------------------------- time */

/* Monotonic clock in milliseconds (fractional). */
static inline double wms_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static inline void wms_sleep_ms(unsigned ms) {
  struct timespec ts;
  ts.tv_sec = (time_t)(ms / 1000u);
  ts.tv_nsec = (long)(ms % 1000u) * 1000000L;
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* True when WMLICENSE_TEST_QUICK is set (valgrind runs): big counts are scaled down. */
static inline int wms_quick(void) {
  const char *q = getenv("WMLICENSE_TEST_QUICK");
  return q != NULL && *q != '\0' && strcmp(q, "0") != 0;
}

/* ---------------------------------------------------------------- event recorder */

/* The thread that ran wms_fresh_home (the test's main thread): events never come on it. */
static pthread_t wms_main_thread;
static int wms_main_thread_set;

typedef struct {
  wm_status status;
  wm_hresult hr;
  wm_operation operation;
  uint64_t processed, total, skipped;
  double at_ms;       /* wms_now_ms() when the callback got it */
  char message[256];  /* "" when the event had none */
} wms_event;

struct wms_recorder;
/* Called by the recorder callback after the event was recorded, outside the recorder's lock.
   `index` is the event's position in the recorder. */
typedef void (*wms_hook)(struct wms_recorder *rec, const wm_event *e, size_t index);

typedef struct wms_recorder {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  wms_event *events;
  size_t count, cap;
  size_t ends;            /* END events seen */
  size_t progress;        /* PROGRESS events seen */
  size_t restricted;      /* RESTRICTED_LICENSE events seen (not stored beyond the first 64) */
  int in_callback;        /* callbacks running right now */
  int concurrent;         /* set when two callbacks of this recorder overlapped */
  int bad_struct_size;    /* set when an event's struct_size was not sizeof(wm_event) */
  int on_main_thread;     /* set when an event came on the main thread (it must come on a worker) */
  wms_hook hook;          /* optional */
  /* Holding the operation at a known point (wms_hold_at): the callback of the first event with
     status `hold_on` blocks until wms_release(). */
  wm_status hold_on;
  int hold_armed, held, released;
  wm_backup_restorer *restorer; /* for hooks */
  void *user;             /* for hooks */
} wms_recorder;

static inline void wms_recorder_init(wms_recorder *rec) {
  memset(rec, 0, sizeof *rec);
  pthread_mutex_init(&rec->mu, NULL);
  pthread_cond_init(&rec->cv, NULL);
}

static inline void wms_recorder_free(wms_recorder *rec) {
  pthread_mutex_destroy(&rec->mu);
  pthread_cond_destroy(&rec->cv);
  free(rec->events);
  rec->events = NULL;
  rec->count = rec->cap = 0;
}

/* Forgets the events recorded so far (the hook, restorer and user pointer stay). */
static inline void wms_recorder_reset(wms_recorder *rec) {
  pthread_mutex_lock(&rec->mu);
  rec->count = rec->ends = rec->progress = rec->restricted = 0;
  rec->concurrent = rec->bad_struct_size = rec->on_main_thread = 0;
  pthread_mutex_unlock(&rec->mu);
}

/* The wm_status_callback: `context` is a wms_recorder. */
static inline void wms_record(const wm_event *e, void *context) {
  wms_recorder *rec = (wms_recorder *)context;
  size_t index;
  int store = 1;
  pthread_mutex_lock(&rec->mu);
  if (rec->in_callback) rec->concurrent = 1;
  rec->in_callback++;
  if (e->struct_size != (uint32_t)sizeof(wm_event)) rec->bad_struct_size = 1;
  if (wms_main_thread_set && pthread_equal(pthread_self(), wms_main_thread)) rec->on_main_thread = 1;
  if (e->status == WM_STATUS_RESTRICTED_LICENSE) {
    rec->restricted++;
    store = rec->restricted <= 64;
  }
  index = rec->count;
  if (store) {
    wms_event *ev;
    if (rec->count == rec->cap) {
      size_t cap = rec->cap ? rec->cap * 2 : 64;
      wms_event *grown = (wms_event *)realloc(rec->events, cap * sizeof *grown);
      if (!grown) {
        fprintf(stderr, "wms_record: out of memory\n");
        abort();
      }
      rec->events = grown;
      rec->cap = cap;
    }
    ev = &rec->events[rec->count++];
    ev->status = e->status;
    ev->hr = e->hr;
    ev->operation = e->operation;
    ev->processed = e->processed;
    ev->total = e->total;
    ev->skipped = e->skipped;
    ev->at_ms = wms_now_ms();
    snprintf(ev->message, sizeof ev->message, "%s", e->message ? e->message : "");
  }
  if (e->status == WM_STATUS_BACKUPRESTORE_END) rec->ends++;
  if (e->status == WM_STATUS_BACKUPRESTORE_PROGRESS) rec->progress++;
  pthread_cond_broadcast(&rec->cv);
  pthread_mutex_unlock(&rec->mu);

  if (rec->hook) rec->hook(rec, e, index);

  pthread_mutex_lock(&rec->mu);
  if (rec->hold_armed && e->status == rec->hold_on) {
    rec->hold_armed = 0;
    rec->held = 1;
    pthread_cond_broadcast(&rec->cv);
    while (!rec->released) pthread_cond_wait(&rec->cv, &rec->mu);
  }
  pthread_mutex_unlock(&rec->mu);

  pthread_mutex_lock(&rec->mu);
  rec->in_callback--;
  pthread_mutex_unlock(&rec->mu);
}

/* Waits until at least `ends` END events were recorded; 0 on timeout, 1 otherwise. */
static inline int wms_wait_ends(wms_recorder *rec, size_t ends, unsigned timeout_ms) {
  struct timespec deadline;
  int ok = 1;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += (time_t)(timeout_ms / 1000u);
  deadline.tv_nsec += (long)(timeout_ms % 1000u) * 1000000L;
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&rec->mu);
  while (rec->ends < ends) {
    if (pthread_cond_timedwait(&rec->cv, &rec->mu, &deadline) != 0 && rec->ends < ends) {
      ok = 0;
      break;
    }
  }
  pthread_mutex_unlock(&rec->mu);
  return ok;
}

/* Holds the next operation at a known point, so that a test of "while it runs" does not depend
   on how fast the engine is: the callback of the first event with `status` (say the
   RESTRICTED_LICENSE of a license in the middle of a backup's stream) blocks until
   wms_release(). */
static inline void wms_hold_at(wms_recorder *rec, wm_status status) {
  pthread_mutex_lock(&rec->mu);
  rec->hold_on = status;
  rec->hold_armed = 1;
  rec->held = rec->released = 0;
  pthread_mutex_unlock(&rec->mu);
}

/* Waits until the operation is held (1), or an END came first or `timeout_ms` passed (0). */
static inline int wms_wait_held(wms_recorder *rec, unsigned timeout_ms) {
  double deadline = wms_now_ms() + timeout_ms;
  for (;;) {
    int held, ended;
    pthread_mutex_lock(&rec->mu);
    held = rec->held;
    ended = rec->ends > 0;
    pthread_mutex_unlock(&rec->mu);
    if (held) return 1;
    if (ended || wms_now_ms() > deadline) return 0;
    wms_sleep_ms(1);
  }
}

/* Lets the held callback return. */
static inline void wms_release(wms_recorder *rec) {
  pthread_mutex_lock(&rec->mu);
  rec->released = 1;
  pthread_cond_broadcast(&rec->cv);
  pthread_mutex_unlock(&rec->mu);
}

typedef struct {
  wms_recorder *rec;
  unsigned ms;
} wms_release_job;

static inline void *wms_release_thread(void *arg) {
  wms_release_job *job = (wms_release_job *)arg;
  wms_sleep_ms(job->ms);
  wms_release(job->rec);
  free(job);
  return NULL;
}

/* Releases the held callback `ms` after this call, from another thread: for a call that itself
   waits for the operation's END (destroy), made right after this one. */
static inline void wms_release_after(wms_recorder *rec, unsigned ms) {
  pthread_t t;
  wms_release_job *job = (wms_release_job *)malloc(sizeof *job);
  if (!job) {
    fprintf(stderr, "wms_release_after: out of memory\n");
    exit(1);
  }
  job->rec = rec;
  job->ms = ms;
  if (pthread_create(&t, NULL, wms_release_thread, job) != 0) {
    fprintf(stderr, "wms_release_after: pthread_create failed\n");
    exit(1);
  }
  pthread_detach(t);
}

/* Copies the recorded events (at most `max`) to `out` under the lock; returns the count. */
static inline size_t wms_snapshot(wms_recorder *rec, wms_event *out, size_t max) {
  size_t n;
  pthread_mutex_lock(&rec->mu);
  n = rec->count < max ? rec->count : max;
  if (n) memcpy(out, rec->events, n * sizeof *out);
  pthread_mutex_unlock(&rec->mu);
  return n;
}

static inline size_t wms_event_count(wms_recorder *rec) {
  size_t n;
  pthread_mutex_lock(&rec->mu);
  n = rec->count + (rec->restricted > 64 ? rec->restricted - 64 : 0);
  pthread_mutex_unlock(&rec->mu);
  return n;
}

static inline size_t wms_end_count(wms_recorder *rec) {
  size_t n;
  pthread_mutex_lock(&rec->mu);
  n = rec->ends;
  pthread_mutex_unlock(&rec->mu);
  return n;
}

/* The last recorded END (zeroed with status 0 when there is none). */
static inline wms_event wms_last_end(wms_recorder *rec) {
  wms_event out;
  size_t i;
  memset(&out, 0, sizeof out);
  pthread_mutex_lock(&rec->mu);
  for (i = rec->count; i > 0; i--) {
    if (rec->events[i - 1].status == WM_STATUS_BACKUPRESTORE_END) {
      out = rec->events[i - 1];
      break;
    }
  }
  pthread_mutex_unlock(&rec->mu);
  return out;
}


/* Prints the recorded events to stderr (for failure diagnostics). */
static inline void wms_dump_events(wms_recorder *rec, const char *label) {
  size_t i;
  pthread_mutex_lock(&rec->mu);
  fprintf(stderr, "  events of %s (%zu):\n", label, rec->count);
  for (i = 0; i < rec->count; i++) {
    const wms_event *ev = &rec->events[i];
    fprintf(stderr, "    %-13s op %d hr 0x%08x processed %llu total %llu skipped %llu %s\n",
            wmt_status_name(ev->status), (int)ev->operation, (unsigned)ev->hr,
            (unsigned long long)ev->processed, (unsigned long long)ev->total,
            (unsigned long long)ev->skipped, ev->message);
  }
  pthread_mutex_unlock(&rec->mu);
}

/* Checks the shape every operation's events must have: BEGIN first, exactly one END and it is
   the last event, one operation kind throughout, never two callbacks at once. Returns the
   number of problems (each also counted as a failed check). */
static inline int wms_check_shape(wms_recorder *rec, wm_operation op, const char *label) {
  int bad = 0;
  size_t i, ends = 0;
  pthread_mutex_lock(&rec->mu);
  if (rec->count == 0 || rec->events[0].status != WM_STATUS_BACKUPRESTORE_BEGIN) bad++;
  for (i = 0; i < rec->count; i++) {
    if (rec->events[i].status == WM_STATUS_BACKUPRESTORE_END) ends++;
    if (rec->events[i].operation != op) bad++;
  }
  if (ends != 1 || rec->ends != 1) bad++;
  if (rec->count == 0 || rec->events[rec->count - 1].status != WM_STATUS_BACKUPRESTORE_END) bad++;
  if (rec->concurrent) bad++;
  if (rec->bad_struct_size) bad++;
  if (rec->on_main_thread) bad++;
  pthread_mutex_unlock(&rec->mu);
  if (bad) {
    fprintf(stderr, "%s: event shape wrong (BEGIN first, one END last, op %d, serial, on a worker, "
            "struct_size)\n", label,
            (int)op);
    wms_dump_events(rec, label);
    wmt_failures += bad;
  }
  return bad;
}

/* ---------------------------------------------------------------- restorer shortcuts */

static inline wm_hresult wms_set_prop(wm_backup_restorer *r, const char *name, const char *value) {
  return wm_backup_restorer_set_prop(r, name, WM_TYPE_STRING, (const uint8_t *)value,
                                     (uint32_t)strlen(value));
}

/* ---------------------------------------------------------------- stores */

/* Fills the store at `dir` (created if needed) with licenses n = first .. first+count-1 made
   by wmt_make_license with `rights`, in put_many batches of 10,000. With title_len > 0 each
   license gets a title of title_len + (n % title_spread) bytes of ASCII (title_spread 0 = 1). */
static inline void wms_fill_store(const char *dir, unsigned first, unsigned count, uint32_t rights,
                           size_t title_len, unsigned title_spread) {
  enum { BATCH = 10000 };
  wm_license_store *s = NULL;
  wm_license *ls = (wm_license *)calloc(BATCH, sizeof *ls);
  char(*kids)[32] = (char(*)[32])calloc(BATCH, 32);
  uint8_t(*keys)[16] = (uint8_t(*)[16])calloc(BATCH, 16);
  size_t title_max = title_len ? title_len + (title_spread ? title_spread : 1) + 1 : 0;
  char *titles = title_max ? (char *)malloc(BATCH * title_max) : NULL;
  unsigned done = 0;
  if (!ls || !kids || !keys || (title_max && !titles)) {
    fprintf(stderr, "wms_fill_store: out of memory\n");
    exit(1);
  }
  REQUIRE_OK(wm_license_store_open(dir, &s));
  while (done < count) {
    unsigned n = count - done < BATCH ? count - done : BATCH;
    unsigned i;
    for (i = 0; i < n; i++) {
      unsigned id = first + done + i;
      wmt_make_license(&ls[i], id, kids[i], keys[i], rights);
      if (title_max) {
        char *t = titles + (size_t)i * title_max;
        size_t len = title_len + (title_spread ? id % title_spread : 0), j;
        for (j = 0; j < len; j++) t[j] = (char)('a' + (id + j * 7) % 26);
        t[len] = '\0';
        ls[i].title = t;
      }
      ls[i].play_count = (int32_t)(id % 7) - 1;
    }
    REQUIRE_OK(wm_license_store_put_many(s, ls, n));
    done += n;
  }
  wm_license_store_close(s);
  free(ls);
  free(kids);
  free(keys);
  free(titles);
}

typedef struct {
  uint64_t count;
  uint64_t sum;
} wms_dump_t;

static inline void wms_mix(uint64_t *h, const void *data, size_t len) {
  const uint8_t *p = (const uint8_t *)data;
  size_t i;
  for (i = 0; i < len; i++) {
    *h ^= p[i];
    *h *= 1099511628211ull; /* FNV-1a 64 */
  }
}

static inline int32_t wms_dump_visit(const wm_license *l, void *ctx) {
  wms_dump_t *d = (wms_dump_t *)ctx;
  uint64_t len;
  uint8_t has_title = l->title != NULL;
  d->count++;
  len = l->key_id_len;
  wms_mix(&d->sum, &len, sizeof len);
  wms_mix(&d->sum, l->key_id, l->key_id_len);
  len = l->content_key_len;
  wms_mix(&d->sum, &len, sizeof len);
  wms_mix(&d->sum, l->content_key, l->content_key_len);
  wms_mix(&d->sum, &has_title, 1);
  if (l->title) wms_mix(&d->sum, l->title, strlen(l->title) + 1);
  wms_mix(&d->sum, &l->rights, sizeof l->rights);
  wms_mix(&d->sum, &l->play_count, sizeof l->play_count);
  wms_mix(&d->sum, &l->begin_date, sizeof l->begin_date);
  wms_mix(&d->sum, &l->expiration_date, sizeof l->expiration_date);
  wms_mix(&d->sum, &l->issued_at, sizeof l->issued_at);
  return 0;
}

/* Count + order-sensitive checksum of every field (content keys included) of the store. */
static inline wms_dump_t wms_dump_store(const char *dir) {
  wms_dump_t d;
  wm_license_store *s = NULL;
  d.count = 0;
  d.sum = 14695981039346656037ull;
  REQUIRE_OK(wm_license_store_open(dir, &s));
  REQUIRE_OK(wm_license_store_for_each(s, wms_dump_visit, &d));
  wm_license_store_close(s);
  return d;
}

static inline uint64_t wms_store_count(const char *dir) {
  wm_license_store *s = NULL;
  uint64_t n = 0;
  REQUIRE_OK(wm_license_store_open(dir, &s));
  REQUIRE_OK(wm_license_store_count(s, &n));
  wm_license_store_close(s);
  return n;
}

/* ---------------------------------------------------------------- files */

/* Reads a whole file into a malloc'd buffer; NULL when it cannot be read. */
static inline uint8_t *wms_read_file(const char *path, size_t *out_len) {
  FILE *f = fopen(path, "rb");
  uint8_t *buf = NULL;
  size_t cap = 0, len = 0;
  if (!f) return NULL;
  for (;;) {
    size_t got;
    if (len == cap) {
      size_t ncap = cap ? cap * 2 : 65536;
      uint8_t *grown = (uint8_t *)realloc(buf, ncap);
      if (!grown) {
        free(buf);
        fclose(f);
        return NULL;
      }
      buf = grown;
      cap = ncap;
    }
    got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  if (ferror(f)) {
    free(buf);
    fclose(f);
    return NULL;
  }
  fclose(f);
  *out_len = len;
  return buf;
}

/* Writes `len` bytes to `path` (replacing it); exits on failure. */
static inline void wms_write_file(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
    fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
    exit(1);
  }
}

/* Counts the entries of `dir` (without . and ..); -1 when it cannot be listed. Entries that
   are neither `allowed` nor a hidden "*.lock" file are printed to stderr and counted in
   *unexpected. */
static inline int wms_list_dir(const char *dir, const char *allowed, int *unexpected) {
  DIR *d = opendir(dir);
  struct dirent *e;
  int n = 0;
  *unexpected = 0;
  if (!d) return -1;
  while ((e = readdir(d)) != NULL) {
    size_t len = strlen(e->d_name);
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    n++;
    if (allowed && strcmp(e->d_name, allowed) == 0) continue;
    if (e->d_name[0] == '.' && len > 5 && strcmp(e->d_name + len - 5, ".lock") == 0) continue;
    fprintf(stderr, "  unexpected entry in %s: %s\n", dir, e->d_name);
    (*unexpected)++;
  }
  closedir(d);
  return n;
}

/* ---------------------------------------------------------------- process */

/* The "Threads:" line of /proc/self/status; -1 where there is none. */
static inline int wms_thread_count(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  int n = -1;
  if (!f) return -1;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "Threads:", 8) == 0) {
      n = atoi(line + 8);
      break;
    }
  }
  fclose(f);
  return n;
}

/* Sets WMLICENSE_HOME to a fresh temporary directory (written to buf); call before any wm_*. */
static inline void wms_fresh_home(char *buf, size_t size, const char *tag) {
  wmt_temp_dir(buf, size, tag);
  wms_main_thread = pthread_self();
  wms_main_thread_set = 1;
  if (setenv("WMLICENSE_HOME", buf, 1) != 0) {
    fprintf(stderr, "setenv: %s\n", strerror(errno));
    exit(1);
  }
}

#endif
