/* Helpers of the backup restorer tests: an event recorder (a callback that copies every event
   into a mutex-protected array), exact event-sequence checks, property and run helpers, and
   owned dumps of a license store for before/after comparisons. Include after test_util.h. */
#ifndef WMLICENSE_RESTORER_UTIL_H
#define WMLICENSE_RESTORER_UTIL_H

#include "test_util.h"

#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* One recorded event: every field copied, pointers turned into owned copies. */
typedef struct {
  uint32_t struct_size;
  int status;
  wm_hresult hr;
  int operation;
  int key_id_null;         /* the event's key_id was NULL */
  uint8_t *key_id;         /* copy of key_id_len bytes, or NULL */
  size_t key_id_len;
  char *title;             /* copy, or NULL when the event's title was NULL */
  uint64_t processed, total, skipped;
  char *message;           /* copy, or NULL when the event's message was NULL */
  int on_caller_thread;    /* delivered on the thread that created the recorder */
  double at_ms;            /* CLOCK_MONOTONIC when the callback was entered, in ms */
} wmr_event;

typedef struct {
  pthread_mutex_t mu;
  wmr_event *ev;
  size_t n, cap;
  pthread_t caller;        /* the test's thread: every wm_* call of the tests comes from it */
  int in_callback;
  int overlaps;            /* callbacks of this recorder that ran concurrently */
} wmr_recorder;

static inline char *wmr_strdup(const char *s) {
  size_t len;
  char *d;
  if (!s) return NULL;
  len = strlen(s);
  d = (char *)malloc(len + 1);
  if (!d) abort();
  memcpy(d, s, len + 1);
  return d;
}

static inline double wmr_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static inline void wmr_init(wmr_recorder *rec) {
  memset(rec, 0, sizeof *rec);
  pthread_mutex_init(&rec->mu, NULL);
  rec->caller = pthread_self();
}

static inline void wmr_clear(wmr_recorder *rec) {
  size_t i;
  pthread_mutex_lock(&rec->mu);
  for (i = 0; i < rec->n; i++) {
    free(rec->ev[i].key_id);
    free(rec->ev[i].title);
    free(rec->ev[i].message);
  }
  rec->n = 0;
  pthread_mutex_unlock(&rec->mu);
}

static inline void wmr_free(wmr_recorder *rec) {
  wmr_clear(rec);
  free(rec->ev);
  rec->ev = NULL;
  rec->cap = 0;
  pthread_mutex_destroy(&rec->mu);
}

/* The wm_status_callback: `context` is a wmr_recorder. */
static inline void wmr_callback(const wm_event *e, void *context) {
  wmr_recorder *rec = (wmr_recorder *)context;
  wmr_event c;
  memset(&c, 0, sizeof c);
  c.at_ms = wmr_now_ms();
  c.on_caller_thread = pthread_equal(pthread_self(), rec->caller) != 0;
  pthread_mutex_lock(&rec->mu);
  if (rec->in_callback) rec->overlaps++;
  rec->in_callback = 1;
  pthread_mutex_unlock(&rec->mu);

  c.struct_size = e->struct_size;
  c.status = (int)e->status;
  c.hr = e->hr;
  c.operation = (int)e->operation;
  c.key_id_null = e->key_id == NULL;
  c.key_id_len = e->key_id_len;
  if (e->key_id && e->key_id_len) {
    c.key_id = (uint8_t *)malloc(e->key_id_len);
    if (!c.key_id) abort();
    memcpy(c.key_id, e->key_id, e->key_id_len);
  }
  c.title = wmr_strdup(e->title);
  c.processed = e->processed;
  c.total = e->total;
  c.skipped = e->skipped;
  c.message = wmr_strdup(e->message);

  pthread_mutex_lock(&rec->mu);
  if (rec->n == rec->cap) {
    size_t cap = rec->cap ? rec->cap * 2 : 64;
    wmr_event *ev = (wmr_event *)realloc(rec->ev, cap * sizeof *ev);
    if (!ev) abort();
    rec->ev = ev;
    rec->cap = cap;
  }
  rec->ev[rec->n++] = c;
  rec->in_callback = 0;
  pthread_mutex_unlock(&rec->mu);
}

static inline size_t wmr_count(wmr_recorder *rec) {
  size_t n;
  pthread_mutex_lock(&rec->mu);
  n = rec->n;
  pthread_mutex_unlock(&rec->mu);
  return n;
}

/* The i-th event (read once the operation is over: after wm_backup_restorer_wait). */
static inline const wmr_event *wmr_at(wmr_recorder *rec, size_t i) {
  return i < rec->n ? &rec->ev[i] : NULL;
}

static inline const wmr_event *wmr_last(wmr_recorder *rec) {
  return rec->n ? &rec->ev[rec->n - 1] : NULL;
}

/* The first event with `status`, or NULL. */
static inline const wmr_event *wmr_find_status(wmr_recorder *rec, int status) {
  size_t i;
  for (i = 0; i < rec->n; i++)
    if (rec->ev[i].status == status) return &rec->ev[i];
  return NULL;
}

static inline size_t wmr_count_status(wmr_recorder *rec, int status) {
  size_t i, k = 0;
  for (i = 0; i < rec->n; i++) k += rec->ev[i].status == status;
  return k;
}


static inline void wmr_print_events(wmr_recorder *rec, FILE *f) {
  size_t i;
  fprintf(f, "    events (%zu):", rec->n);
  for (i = 0; i < rec->n; i++) {
    const wmr_event *e = &rec->ev[i];
    fprintf(f, " %s", wmt_status_name(e->status));
    if (e->status == WM_STATUS_BACKUPRESTORE_END || e->status == WM_STATUS_ERROR_WITHURL)
      fprintf(f, "(hr=0x%08x p=%llu t=%llu s=%llu msg=%s)", (unsigned)e->hr,
              (unsigned long long)e->processed, (unsigned long long)e->total,
              (unsigned long long)e->skipped, e->message ? e->message : "(null)");
  }
  fprintf(f, "\n");
}

/* True when the recorded statuses are exactly exp[0..n); prints both sequences otherwise. */
static inline int wmr_seq_is(wmr_recorder *rec, const int *exp, size_t n, const char *file, int line) {
  size_t i;
  int same = rec->n == n;
  for (i = 0; same && i < n; i++) same = rec->ev[i].status == exp[i];
  if (!same) {
    fprintf(stderr, "%s:%d: event sequence differs\n    expected (%zu):", file, line, n);
    for (i = 0; i < n; i++) fprintf(stderr, " %s", wmt_status_name(exp[i]));
    fprintf(stderr, "\n");
    wmr_print_events(rec, stderr);
  }
  return same;
}

/* CHECK_SEQ(&rec, WM_STATUS_..., ...): the exact status sequence of the recorded events. */
#define CHECK_SEQ(rec, ...)                                                           \
  do {                                                                               \
    static const int wmr_exp_[] = {__VA_ARGS__};                                     \
    if (!wmr_seq_is((rec), wmr_exp_, sizeof wmr_exp_ / sizeof wmr_exp_[0], __FILE__, __LINE__)) \
      wmt_failures++;                                                                \
  } while (0)

/* Invariants every recorded operation must satisfy, whatever its outcome: struct_size, the
   operation, never on the calling thread, never concurrent, BEGIN first, exactly one END and
   last, hr S_OK except in END/ERROR_WITHURL, key_id only in RESTRICTED_LICENSE, message only in
   ERROR_WITHURL and a failed END (then non-empty). Returns the number of violations. */
static inline int wmr_common(wmr_recorder *rec, int op, const char *file, int line) {
  size_t i;
  int bad = 0;
#define WMR_FAIL(...)                                                        \
  do {                                                                       \
    fprintf(stderr, "%s:%d: ", file, line);                                  \
    fprintf(stderr, __VA_ARGS__);                                            \
    fprintf(stderr, "\n");                                                   \
    bad++;                                                                   \
  } while (0)
  if (rec->n == 0) WMR_FAIL("no event was recorded");
  if (rec->n && rec->ev[0].status != WM_STATUS_BACKUPRESTORE_BEGIN) WMR_FAIL("first event is not BEGIN");
  if (wmr_count_status(rec, WM_STATUS_BACKUPRESTORE_BEGIN) != 1) WMR_FAIL("not exactly one BEGIN");
  if (wmr_count_status(rec, WM_STATUS_BACKUPRESTORE_END) != 1) WMR_FAIL("not exactly one END");
  if (rec->n && rec->ev[rec->n - 1].status != WM_STATUS_BACKUPRESTORE_END) WMR_FAIL("last event is not END");
  if (rec->overlaps) WMR_FAIL("%d callbacks ran concurrently", rec->overlaps);
  for (i = 0; i < rec->n; i++) {
    const wmr_event *e = &rec->ev[i];
    int is_end = e->status == WM_STATUS_BACKUPRESTORE_END;
    int is_url = e->status == WM_STATUS_ERROR_WITHURL;
    if (e->struct_size != (uint32_t)sizeof(wm_event))
      WMR_FAIL("event %zu: struct_size %u, expected %u", i, (unsigned)e->struct_size, (unsigned)sizeof(wm_event));
    if (e->operation != op) WMR_FAIL("event %zu: operation %d, expected %d", i, e->operation, op);
    if (e->on_caller_thread) WMR_FAIL("event %zu (%s) was delivered on the calling thread", i, wmt_status_name(e->status));
    if (!is_end && !is_url && e->hr != WM_S_OK)
      WMR_FAIL("event %zu (%s): hr 0x%08x, expected S_OK", i, wmt_status_name(e->status), (unsigned)e->hr);
    if (e->status == WM_STATUS_RESTRICTED_LICENSE) {
      if (e->key_id_null || e->key_id_len == 0) WMR_FAIL("event %zu: RESTRICTED_LICENSE without key ID", i);
    } else if (!e->key_id_null || e->key_id_len != 0 || e->title) {
      WMR_FAIL("event %zu (%s): key_id/title set", i, wmt_status_name(e->status));
    }
    if (is_url || (is_end && WM_FAILED(e->hr))) {
      if (!e->message || !e->message[0]) WMR_FAIL("event %zu (%s): message NULL or empty", i, wmt_status_name(e->status));
    } else if (e->message) {
      WMR_FAIL("event %zu (%s): unexpected message '%s'", i, wmt_status_name(e->status), e->message);
    }
  }
#undef WMR_FAIL
  if (bad) wmr_print_events(rec, stderr);
  return bad;
}

#define CHECK_EVENTS(rec, op)                                                        \
  do {                                                                               \
    if (wmr_common((rec), (op), __FILE__, __LINE__)) wmt_failures++;                 \
  } while (0)

/* The END event (the last one) or a zeroed stand-in that fails every outcome check. */
static inline wmr_event wmr_end(wmr_recorder *rec) {
  wmr_event e;
  const wmr_event *last = wmr_last(rec);
  if (last && last->status == WM_STATUS_BACKUPRESTORE_END) return *last;
  memset(&e, 0, sizeof e);
  e.status = -1;
  e.hr = (wm_hresult)0x7fffffff;
  e.processed = e.total = e.skipped = UINT64_MAX;
  return e;
}

/* Checks END's outcome and counters exactly. */
#define CHECK_END(rec, hr_, processed_, total_, skipped_)                            \
  do {                                                                               \
    wmr_event wmr_e_ = wmr_end(rec);                                                 \
    CHECK(wmr_e_.status == WM_STATUS_BACKUPRESTORE_END);                             \
    CHECK_HR(wmr_e_.hr, (hr_));                                                      \
    CHECK(wmr_e_.processed == (uint64_t)(processed_));                               \
    CHECK(wmr_e_.total == (uint64_t)(total_));                                       \
    CHECK(wmr_e_.skipped == (uint64_t)(skipped_));                                   \
  } while (0)

static inline wm_hresult wmr_set_str(wm_backup_restorer *r, const char *name, const char *value) {
  return wm_backup_restorer_set_prop(r, name, WM_TYPE_STRING, (const uint8_t *)value, (uint32_t)strlen(value));
}

static inline wm_backup_restorer *wmr_create(wmr_recorder *rec) {
  wm_backup_restorer *r = NULL;
  REQUIRE_OK(wm_backup_restorer_create(wmr_callback, rec, &r));
  return r;
}

/* Clears the recorder, starts a backup and, when it started, waits for it to end. Returns the
   start call's result. */
static inline wm_hresult wmr_run_backup(wm_backup_restorer *r, wmr_recorder *rec, uint32_t flags) {
  wm_hresult hr;
  wmr_clear(rec);
  hr = wm_backup_restorer_backup(r, flags);
  if (hr == WM_S_OK) REQUIRE_OK(wm_backup_restorer_wait(r, WM_INFINITE));
  return hr;
}

static inline wm_hresult wmr_run_restore(wm_backup_restorer *r, wmr_recorder *rec, uint32_t flags) {
  wm_hresult hr;
  wmr_clear(rec);
  hr = wm_backup_restorer_restore(r, flags);
  if (hr == WM_S_OK) REQUIRE_OK(wm_backup_restorer_wait(r, WM_INFINITE));
  return hr;
}

/* Gives a started-by-mistake operation time to show itself, then returns the event count. */
static inline size_t wmr_settle(wm_backup_restorer *r, wmr_recorder *rec) {
  struct timespec ts = {0, 100 * 1000 * 1000};
  nanosleep(&ts, NULL);
  (void)wm_backup_restorer_wait(r, 5000);
  return wmr_count(rec);
}

/* A fresh WMLICENSE_HOME (the embedded service's key and ledger go there). */
static inline void wmr_fresh_home(char *buf, size_t size, const char *tag) {
  wmt_temp_dir(buf, size, tag);
  setenv("WMLICENSE_HOME", buf, 1);
}

static inline int wmr_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* Number of entries of `dir` whose name starts with `prefix` (-1 if it cannot be read). */
static inline int wmr_dir_count_prefix(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  struct dirent *de;
  int k = 0;
  if (!d) return -1;
  while ((de = readdir(d)) != NULL)
    if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) k++;
  closedir(d);
  return k;
}

/* Reads a whole file; returns 0 on success (*out malloc'd). */
static inline int wmr_read_file(const char *path, uint8_t **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  uint8_t *buf = NULL;
  size_t cap = 0, n = 0, got;
  if (!f) return -1;
  for (;;) {
    if (n == cap) {
      uint8_t *nb;
      cap = cap ? cap * 2 : 4096;
      nb = (uint8_t *)realloc(buf, cap);
      if (!nb) abort();
      buf = nb;
    }
    got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  fclose(f);
  *out = buf;
  *len = n;
  return 0;
}

static inline int wmr_write_file(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  int ok;
  if (!f) return -1;
  ok = fwrite(data, 1, len, f) == len;
  return (fclose(f) == 0 && ok) ? 0 : -1;
}

/* An owned copy of a license. */
typedef struct {
  uint8_t key_id[64];
  size_t key_id_len;
  uint8_t content_key[64];
  size_t content_key_len;
  int has_title;
  char title[1025];
  uint32_t rights;
  int32_t play_count;
  int64_t begin_date, expiration_date, issued_at;
} wmr_lic;

typedef struct {
  wmr_lic *v;
  size_t n, cap;
} wmr_dump_t;

static inline int32_t wmr_dump_visit(const wm_license *l, void *ctx) {
  wmr_dump_t *d = (wmr_dump_t *)ctx;
  wmr_lic *c;
  if (d->n == d->cap) {
    size_t cap = d->cap ? d->cap * 2 : 16;
    wmr_lic *nv = (wmr_lic *)realloc(d->v, cap * sizeof *nv);
    if (!nv) abort();
    d->v = nv;
    d->cap = cap;
  }
  c = &d->v[d->n++];
  memset(c, 0, sizeof *c);
  c->key_id_len = l->key_id_len <= 64 ? l->key_id_len : 64;
  memcpy(c->key_id, l->key_id, c->key_id_len);
  c->content_key_len = l->content_key_len <= 64 ? l->content_key_len : 64;
  memcpy(c->content_key, l->content_key, c->content_key_len);
  c->has_title = l->title != NULL;
  if (l->title) snprintf(c->title, sizeof c->title, "%s", l->title);
  c->rights = l->rights;
  c->play_count = l->play_count;
  c->begin_date = l->begin_date;
  c->expiration_date = l->expiration_date;
  c->issued_at = l->issued_at;
  return 0;
}

/* Dumps every license of the store at `path` (for_each, key-ID order). */
static inline wm_hresult wmr_dump(const char *path, wmr_dump_t *d) {
  wm_license_store *s = NULL;
  wm_hresult hr;
  memset(d, 0, sizeof *d);
  hr = wm_license_store_open(path, &s);
  if (hr != WM_S_OK) return hr;
  hr = wm_license_store_for_each(s, wmr_dump_visit, d);
  wm_license_store_close(s);
  return hr;
}

static inline void wmr_dump_free(wmr_dump_t *d) {
  free(d->v);
  memset(d, 0, sizeof *d);
}

static inline int wmr_lic_same(const wmr_lic *a, const wmr_lic *b) {
  return a->key_id_len == b->key_id_len && memcmp(a->key_id, b->key_id, a->key_id_len) == 0 &&
         a->content_key_len == b->content_key_len &&
         memcmp(a->content_key, b->content_key, a->content_key_len) == 0 && a->has_title == b->has_title &&
         strcmp(a->title, b->title) == 0 && a->rights == b->rights && a->play_count == b->play_count &&
         a->begin_date == b->begin_date && a->expiration_date == b->expiration_date &&
         a->issued_at == b->issued_at;
}

/* A license as the test defined it equals a dumped one, field by field. */
static inline int wmr_lic_is(const wmr_lic *got, const wm_license *want) {
  wmr_lic w;
  wmr_dump_t tmp;
  tmp.v = &w;
  tmp.n = 0;
  tmp.cap = 1;
  wmr_dump_visit(want, &tmp);
  return wmr_lic_same(got, &w);
}

static inline int wmr_dumps_equal(const wmr_dump_t *a, const wmr_dump_t *b) {
  size_t i;
  if (a->n != b->n) return 0;
  for (i = 0; i < a->n; i++)
    if (!wmr_lic_same(&a->v[i], &b->v[i])) return 0;
  return 1;
}

static inline const wmr_lic *wmr_dump_find(const wmr_dump_t *d, const uint8_t *kid, size_t len) {
  size_t i;
  for (i = 0; i < d->n; i++)
    if (d->v[i].key_id_len == len && memcmp(d->v[i].key_id, kid, len) == 0) return &d->v[i];
  return NULL;
}

/* Opens (creating) the store at `path` and puts `n` licenses in one transaction. */
static inline wm_hresult wmr_put(const char *path, const wm_license *l, size_t n) {
  wm_license_store *s = NULL;
  wm_hresult hr = wm_license_store_open(path, &s);
  if (hr != WM_S_OK) return hr;
  hr = wm_license_store_put_many(s, l, n);
  wm_license_store_close(s);
  return hr;
}

static inline wm_license wmr_license(const uint8_t *kid, size_t kid_len, const uint8_t *key, size_t key_len,
                                     const char *title, uint32_t rights, int32_t plays, int64_t begin,
                                     int64_t expires, int64_t issued) {
  wm_license l;
  memset(&l, 0, sizeof l);
  l.key_id = kid;
  l.key_id_len = kid_len;
  l.content_key = key;
  l.content_key_len = key_len;
  l.title = title;
  l.rights = rights;
  l.play_count = plays;
  l.begin_date = begin;
  l.expiration_date = expires;
  l.issued_at = issued;
  return l;
}

#endif
